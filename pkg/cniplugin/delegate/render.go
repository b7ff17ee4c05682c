package delegate

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types/create"
)

// passThrough are the keys of the wrapper's stdin that the runtime fills in
// for the plugin it calls, and that the delegate must see as the wrapper did:
// runtime capabilities, CNI_ARGS-style args, GC's lists and prevResult.
var passThrough = []string{"runtimeConfig", "args", "cni.dev/valid-attachments", "cni.dev/attachments", "prevResult"}

// Render builds the delegate's stdin: base (a delegate object, or a config
// rendered earlier and recorded) with name and cniVersion set, and the
// wrapper's pass-through keys copied from outer (the wrapper's own stdin)
// over those of base; a base prevResult that outer does not renew is
// dropped, since it described another call. A prevResult is converted to
// cniVersion when outer's is another version; one that cannot be converted
// is dropped (DEL works from its own record).
func Render(base json.RawMessage, outer []byte, name, cniVersion string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(base, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("delegate config is not a JSON object")
	}
	var in map[string]json.RawMessage
	if err := json.Unmarshal(outer, &in); err != nil {
		return nil, fmt.Errorf("wrapper config: %w", err)
	}
	delete(obj, "prevResult")
	for _, k := range passThrough {
		if v, ok := in[k]; ok {
			obj[k] = v
		}
	}
	if v, ok := obj["prevResult"]; ok {
		prev, err := resultAs(v, in["cniVersion"], cniVersion)
		if err != nil {
			delete(obj, "prevResult")
		} else {
			obj["prevResult"] = prev
		}
	}
	obj["name"], _ = json.Marshal(name)
	obj["cniVersion"], _ = json.Marshal(cniVersion)
	return json.Marshal(obj)
}

// resultAs converts a prevResult given in fromVersion (a raw JSON string)
// to want, or returns it as is when the versions agree.
func resultAs(prev, fromVersion json.RawMessage, want string) (json.RawMessage, error) {
	var from string
	_ = json.Unmarshal(fromVersion, &from)
	if from == "" || from == want {
		return prev, nil
	}
	r, err := create.Create(from, prev)
	if err != nil {
		return nil, err
	}
	c, err := r.GetAsVersion(want)
	if err != nil {
		return nil, err
	}
	return json.Marshal(c)
}
