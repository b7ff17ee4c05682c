package image

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	rt "github.com/leakguard/leakguard/test/runtime"
)

// usageLine is what `leakguardctl --help` prints first: the image's
// entrypoint ran, from the image's own /bin.
const usageLine = "usage: leakguardctl <command> [flags]"

// TestContainerdImport imports the archive as docs/kubernetes.md says (`ctr
// -n k8s.io images import`, containerd 2.4's default transfer path), finds
// it through CRI under its reference, and runs it as kubelet would: a pod,
// a container with the image's entrypoint and `--help` as args.
func TestContainerdImport(t *testing.T) {
	tools := runtimeTools(t)
	images, err := rt.BuildTestImages(t.TempDir(), tools)
	if err != nil {
		t.Fatal(err)
	}
	cni := rt.NewCNI(t, tools, rt.NewNetwork(t), t.TempDir(), rt.ChainOptions{})
	ctd := rt.StartContainerd(t, tools, rt.ContainerdOptions{CNI: cni})
	ctd.ImportImages(t, images.Pause)

	if out, err := ctd.Ctr("images", "import", imageTar); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := ctd.Ctr("images", "list", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(out), testRef) {
		t.Fatalf("ctr images list has no %s:\n%s", testRef, out)
	}
	info := ctd.Crictl.MustRun(t, "inspecti", "-o", "json", testRef)
	var img struct {
		Status struct {
			RepoTags []string `json:"repoTags"`
		} `json:"status"`
		Info struct {
			ImageSpec struct {
				Config struct {
					Entrypoint []string          `json:"Entrypoint"`
					Labels     map[string]string `json:"Labels"`
				} `json:"config"`
			} `json:"imageSpec"`
		} `json:"info"`
	}
	mustJSON(t, []byte(info), &img)
	if !slices.Contains(img.Status.RepoTags, testRef) {
		t.Errorf("CRI repoTags %v, want %s", img.Status.RepoTags, testRef)
	}
	if c := img.Info.ImageSpec.Config; strings.Join(c.Entrypoint, " ") != "/bin/leakguardctl" || c.Labels["org.opencontainers.image.revision"] != "0123abcd" {
		t.Errorf("CRI sees entrypoint %q labels %v", c.Entrypoint, c.Labels)
	}

	pod := ctd.Crictl.RunPod(t, rt.PodSpec{})
	id := ctd.Crictl.RunContainer(t, pod, rt.ContainerSpec{Name: "help", Image: testRef, Args: []string{"--help"}})
	exit, logs := waitExited(t, ctd.Crictl, id)
	if exit != 0 || !strings.Contains(logs, usageLine) {
		t.Errorf("leakguardctl --help in the image: exit %d, output:\n%s", exit, logs)
	}
	// Each binary is there and runs: leakguard-nri as the DaemonSet's
	// second container's command.
	id = ctd.Crictl.RunContainer(t, pod, rt.ContainerSpec{Name: "nri-help", Image: testRef, Command: []string{"/bin/leakguard-nri"}, Args: []string{"--help"}})
	exit, logs = waitExited(t, ctd.Crictl, id)
	if exit != 0 || !strings.Contains(logs, "-state-file") {
		t.Errorf("leakguard-nri --help in the image: exit %d, output:\n%s", exit, logs)
	}
}

// TestDockerLoad loads the same archive into docker.io 20.10 and runs it.
func TestDockerLoad(t *testing.T) {
	tools := runtimeTools(t)
	cni := rt.NewCNI(t, tools, rt.NewNetwork(t), t.TempDir(), rt.ChainOptions{CNIVersion: "1.0.0"})
	d := rt.StartDocker(t, tools, rt.DockerOptions{CNI: cni})

	out, err := d.Docker("load", "-i", imageTar)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// docker names docker.io's images without the registry.
	if want := "Loaded image: " + strings.TrimPrefix(testRef, "docker.io/"); !strings.Contains(out, want) {
		t.Errorf("docker load said %q, want %q", out, want)
	}
	out, err = d.Docker("image", "inspect", testRef)
	if err != nil {
		t.Fatal(err)
	}
	var insp []struct {
		RepoTags     []string
		Architecture string
		Config       struct {
			Entrypoint []string
			Labels     map[string]string
		}
	}
	mustJSON(t, []byte(out), &insp)
	if len(insp) != 1 || strings.Join(insp[0].Config.Entrypoint, " ") != "/bin/leakguardctl" ||
		insp[0].Config.Labels["org.opencontainers.image.version"] != "v0.0.0-test" {
		t.Errorf("docker image inspect: %s", out)
	}
	out, err = d.Docker("run", "--rm", "--network", "none", testRef, "--help")
	if err != nil || !strings.Contains(out, usageLine) {
		t.Errorf("docker run %s --help: %v\n%s", testRef, err, out)
	}
}

// waitExited waits for a container to exit and returns its exit code and
// its log (the CRI log file: stdout and stderr).
func waitExited(t *testing.T, c *rt.Crictl, id string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := c.MustRun(t, "inspect", "-o", "json", id)
		var st struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
				LogPath  string `json:"logPath"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("crictl inspect %s: %v", id, err)
		}
		if st.Status.State == "CONTAINER_EXITED" {
			logs, err := os.ReadFile(st.Status.LogPath)
			if err != nil {
				t.Fatalf("log of %s: %v", id, err)
			}
			return st.Status.ExitCode, string(logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s after 30s", id, st.Status.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
