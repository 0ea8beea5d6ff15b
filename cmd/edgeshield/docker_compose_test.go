package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeshield/edgeshield/edge"
)

const composeFile = "../../configs/docker-compose.yml"

// composeDoc is the part of a compose file the test checks.
type composeDoc struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Networks    map[string]struct {
			IPv4 string `yaml:"ipv4_address"`
		} `yaml:"networks"`
	} `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// interpolate resolves ${VAR:-default} as compose does when VAR is unset,
// so the test checks the defaults a user gets.
var composeVar = regexp.MustCompile(`\$\{[A-Z0-9_]+:-([^}]*)\}`)

// TestDockerComposeFile checks that configs/docker-compose.yml is a cluster
// that can work: every edge's environment is a configuration the real loader
// accepts, each edge binds the address the network gives it, the seeds are
// exactly the edges, names and published ports are unique, and the origin
// URL points at the origin service. With a compose CLI present it also lets
// compose itself validate the file.
func TestDockerComposeFile(t *testing.T) {
	src, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc composeDoc
	if err := yaml.Unmarshal([]byte(composeVar.ReplaceAllString(string(src), "$1")), &doc); err != nil {
		t.Fatalf("parse %s: %v", composeFile, err)
	}
	origin, ok := doc.Services["origin"]
	if !ok {
		t.Fatalf("no origin service; got services %v", keys(doc.Services))
	}
	originIP := origin.Networks["edgeshield"].IPv4
	var edges, wantSeeds []string
	for name, s := range doc.Services {
		if strings.HasPrefix(name, "edge-") {
			edges = append(edges, name)
			wantSeeds = append(wantSeeds, s.Networks["edgeshield"].IPv4+":7946")
		}
	}
	slices.Sort(edges)
	slices.Sort(wantSeeds)
	if len(edges) != 3 {
		t.Fatalf("got edge services %v, want 3", edges)
	}
	if got := doc.Networks["edgeshield"].IPAM.Config; len(got) != 1 || got[0].Subnet == "" {
		t.Fatalf("got network ipam %+v, want one fixed subnet (the seeds name addresses)", got)
	}
	ports := map[string]string{}
	for name, s := range doc.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q, want 127.0.0.1 only (the admin API and demo origin must not be exposed)", name, p)
			}
			host := p[:strings.LastIndex(p, ":")]
			if other, dup := ports[host]; dup {
				t.Errorf("host port %s published by %s and %s", host, other, name)
			}
			ports[host] = name
		}
	}
	for _, name := range edges {
		t.Run(name, func(t *testing.T) {
			s := doc.Services[name]
			ip := s.Networks["edgeshield"].IPv4
			var environ []string
			for k, v := range s.Environment {
				environ = append(environ, k+"="+v)
			}
			cfg, err := edge.LoadConfig("", environ)
			if err != nil {
				t.Fatalf("the edge config loader refuses the environment: %v", err)
			}
			if err := cfg.Validate("", nil); err != nil {
				t.Fatalf("config does not validate: %v", err)
			}
			seeds := slices.Clone(cfg.Cluster.Seeds)
			slices.Sort(seeds)
			for _, c := range []struct{ what, got, want string }{
				{"name", cfg.Name, name},
				{"cluster.bind", cfg.Cluster.BindAddr, ip + ":7946"},
				{"cluster.peer_listen", cfg.Cluster.PeerListen, ip + ":7947"},
				{"cluster.seeds", fmt.Sprint(seeds), fmt.Sprint(wantSeeds)},
				{"origin.url", cfg.Origin.URL, "http://" + originIP + ":8081"},
				{"image", s.Image, origin.Image},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
			if !cfg.Cluster.Enabled {
				t.Errorf("cluster.enabled: got false, want true")
			}
			if k := cfg.Cluster.SecretKey; len(k) != 32 {
				t.Errorf("cluster.secret_key: got %d bytes, want 32", len(k))
			}
		})
	}
	if originCmd := strings.Join(origin.Command, " "); !strings.Contains(originCmd, "origin --listen 0.0.0.0:8081") {
		t.Errorf("origin command: got %q, want the demo origin on 0.0.0.0:8081", originCmd)
	}

	t.Run("compose config", func(t *testing.T) {
		var cli []string
		if _, err := docker(20*time.Second, "compose", "version"); err == nil {
			cli = []string{"docker", "compose"}
		} else if _, err := exec.LookPath("docker-compose"); err == nil {
			cli = []string{"docker-compose"}
		} else {
			t.Skip("no docker compose CLI: the file was only checked as YAML")
		}
		args := append(cli[1:], "-f", composeFile, "config", "-q")
		if out, err := exec.Command(cli[0], args...).CombinedOutput(); err != nil {
			t.Fatalf("%s config: %v: %s", strings.Join(cli, " "), err, out)
		}
	})
}

func keys[M ~map[string]V, V any](m M) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
