package main

import (
	"strings"
	"testing"
)

const baseConf = `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5/32","table":100}`

func TestLoadConfDefaults(t *testing.T) {
	c, err := loadConf([]byte(baseConf), "", "ctr1")
	if err != nil {
		t.Fatal(err)
	}
	if c.addr.String() != "10.77.0.5/32" || c.gateway.String() != "169.254.1.1" {
		t.Errorf("addr %s gateway %s", c.addr, c.gateway)
	}
	if c.ToPodPriority != 512 || c.FromPodPriority != 1536 || c.Table != 100 {
		t.Errorf("priorities %d/%d table %d", c.ToPodPriority, c.FromPodPriority, c.Table)
	}
	if c.hostVeth != hostVethName("ctr1") {
		t.Errorf("without pod args the name must derive from the container ID")
	}
}

func TestLoadConfPodArgs(t *testing.T) {
	args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x;IP=10.77.0.9/32"
	c1, err := loadConf([]byte(baseConf), args, "ctr1")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := loadConf([]byte(baseConf), args, "ctr2")
	if err != nil {
		t.Fatal(err)
	}
	if c1.addr.String() != "10.77.0.9/32" {
		t.Errorf("IP in CNI_ARGS must override ip: got %s", c1.addr)
	}
	if c1.hostVeth != c2.hostVeth {
		t.Errorf("two sandboxes of one pod must share the host veth name: %s vs %s", c1.hostVeth, c2.hostVeth)
	}
	if len(c1.hostVeth) > 15 || !strings.HasPrefix(c1.hostVeth, "eni") {
		t.Errorf("bad host veth name %q", c1.hostVeth)
	}
	other, err := loadConf([]byte(baseConf), "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1", "ctr1")
	if err != nil {
		t.Fatal(err)
	}
	if other.hostVeth == c1.hostVeth {
		t.Errorf("different pods got the same host veth name %s", c1.hostVeth)
	}
}

func TestLoadConfInvalid(t *testing.T) {
	for name, conf := range map[string]string{
		"no ip":        `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","table":100}`,
		"bad ip":       `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5","table":100}`,
		"ipv6":         `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"fd00::5/128","table":100}`,
		"no table":     `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5/32"}`,
		"main table":   `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5/32","table":254}`,
		"bad gateway":  `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5/32","table":100,"gateway":"x"}`,
		"neg priority": `{"cniVersion":"1.1.0","name":"n","type":"tke-eni","ip":"10.77.0.5/32","table":100,"toPodPriority":-1}`,
		"not json":     `{`,
	} {
		if _, err := loadConf([]byte(conf), "", "ctr"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
