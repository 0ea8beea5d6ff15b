package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeshield/edgeshield/edge"
)

const (
	composeFile      = "../../configs/docker-compose.yml"
	composeScaleFile = "../../configs/docker-compose.scale.yml"
)

// composeDoc is the part of a compose file the test checks.
type composeDoc struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Networks map[string]any `yaml:"networks"`
	} `yaml:"services"`
}

// interpolate resolves ${VAR:-default} as compose does when VAR is unset,
// so the test checks the defaults a user gets.
var composeVar = regexp.MustCompile(`\$\{[A-Z0-9_]+:-([^}]*)\}`)

// TestDockerComposeFile checks that configs/docker-compose.yml is a cluster
// that can work: every edge's environment is a configuration the real loader
// accepts, gossip and shield hops advertise the container's own address
// (no fixed IPs), the seeds are exactly the edges' service names, host ports
// are high, on 127.0.0.1 and unique, every edge has a healthcheck that runs
// the binary itself, drain_delay is set, and the origin URL names the origin
// service. With a compose CLI present it also lets compose validate the file
// and configs/docker-compose.scale.yml.
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
	var edges, wantSeeds []string
	for name, s := range doc.Services {
		if len(s.Networks) > 0 {
			t.Errorf("%s: got networks %v, want none (fixed addresses break --scale and collide with host subnets)", name, s.Networks)
		}
		if strings.HasPrefix(name, "edge-") {
			edges = append(edges, name)
			wantSeeds = append(wantSeeds, name+":7946")
		}
	}
	slices.Sort(edges)
	slices.Sort(wantSeeds)
	if len(edges) != 3 {
		t.Fatalf("got edge services %v, want 3", edges)
	}
	ports := map[string]string{}
	for name, s := range doc.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q, want 127.0.0.1 only (the admin API and demo origin must not be exposed)", name, p)
			}
			host := p[:strings.LastIndex(p, ":")]
			if n, _ := strconv.Atoi(strings.TrimPrefix(host, "127.0.0.1:")); n < 10000 {
				t.Errorf("%s publishes host port %q, want one above 10000 (8000-9999 are often taken)", name, host)
			}
			if other, dup := ports[host]; dup {
				t.Errorf("host port %s published by %s and %s", host, other, name)
			}
			ports[host] = name
		}
	}
	for _, name := range edges {
		t.Run(name, func(t *testing.T) {
			s := doc.Services[name]
			var environ []string
			for k, v := range s.Environment {
				if v == "auto" && strings.Contains(k, "ADVERTISE") {
					v = "192.0.2.1" // resolved from the container's host name at run time
					if k == "EDGESHIELD_CLUSTER_PEER_ADVERTISE" {
						v += ":7947"
					}
				}
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
				{"cluster.advertise", s.Environment["EDGESHIELD_CLUSTER_ADVERTISE"], "auto"},
				{"cluster.peer_advertise", s.Environment["EDGESHIELD_CLUSTER_PEER_ADVERTISE"], "auto"},
				{"cluster.seeds", fmt.Sprint(seeds), fmt.Sprint(wantSeeds)},
				{"origin.url", cfg.Origin.URL, "http://origin:8081"},
				{"image", s.Image, origin.Image},
				{"admin.listen", cfg.Admin.Listen, "0.0.0.0:9090"},
				{"healthcheck", strings.Join(s.Healthcheck.Test, " "),
					"CMD /edgeshield probe --once --quiet --timeout 2s --targets http://127.0.0.1:8080" + cfg.Server.HealthPath},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
			if cfg.Server.DrainDelay <= 0 {
				t.Errorf("server.drain_delay: got %v, want > 0 (docker stop drains)", cfg.Server.DrainDelay)
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
		for _, f := range []string{composeFile, composeScaleFile} {
			args := append(slices.Clone(cli[1:]), "-f", f, "config", "-q")
			if out, err := exec.Command(cli[0], args...).CombinedOutput(); err != nil {
				t.Errorf("%s -f %s config: %v: %s", strings.Join(cli, " "), f, err, out)
			}
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
