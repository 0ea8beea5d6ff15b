// Package conf holds the small convention the configurable packages
// (origin, cluster, edge/certs) share with the edge's YAML loader: a
// package's Config carries yaml tags and a Validate method, and Validate
// reports a bad value as a *FieldError naming the field by its yaml key.
// The edge prefixes the key with the block the struct sits in
// ("origin.", "cluster.", "tls.") and adds the file and line, so each rule
// lives once, in the package that owns the setting, and the operator still
// gets "edge.yaml:12: cluster.secret_key: …".
//
// It has no dependencies, so leaf packages can use it without importing
// the edge (or each other).
package conf

import "fmt"

// FieldError is a bad configuration value. Field is the yaml key relative
// to the struct that Validate was called on: "storage",
// "certificates[1].key", "on_demand.allow[0]".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errorf returns a *FieldError for field.
func Errorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
