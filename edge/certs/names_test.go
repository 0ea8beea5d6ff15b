package certs

import (
	"errors"
	"testing"
	"time"
)

// TestSetNamesAddsAndRemoves: a reload's tls.names takes effect on the
// running manager: a new name gets its certificate and is served, a name
// dropped from the list is no longer served, an invalid list changes
// nothing.
func TestSetNamesAddsAndRemoves(t *testing.T) {
	m, addr, roots := internalNode(t, Config{Names: []string{"old.dev.test"}}, "old.dev.test")
	if _, err := handshake(addr, "new.dev.test", roots); err == nil {
		t.Fatal("new.dev.test served before it was configured")
	}
	if err := m.SetNames([]string{"a b.test"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("SetNames with an invalid name: %v, want ErrInvalidConfig", err)
	}
	if _, err := handshake(addr, "old.dev.test", roots); err != nil {
		t.Fatalf("old.dev.test after a refused SetNames: %v", err)
	}
	if err := m.SetNames([]string{"NEW.dev.test."}); err != nil {
		t.Fatalf("SetNames: %v", err)
	}
	eventually(t, 20*time.Second, "a certificate for the added name", func() error {
		_, err := handshake(addr, "new.dev.test", roots)
		return err
	})
	eventually(t, 10*time.Second, "the removed name no longer served", func() error {
		if _, err := handshake(addr, "old.dev.test", roots); err == nil {
			return errors.New("old.dev.test still served")
		}
		return nil
	})
	if _, err := statusOf(m, "new.dev.test"); err != nil {
		t.Errorf("GET /tls has no status for the added name: %v", err)
	}
}
