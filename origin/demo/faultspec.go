package demo

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrFaultSpec wraps every error returned by ParseFault.
var ErrFaultSpec = errors.New("demo origin: bad fault spec")

// ParseFault parses the command-line form of a Fault: comma-separated
// key=value pairs, for example
//
//	prefix=/img/,status=503,rate=0.1
//	prefix=/api/,delay=250ms
//	reset,rate=0.01
//
// Keys: prefix (PathPrefix; it cannot contain a comma), status, delay (a Go
// duration), reset (alone, or reset=true/false) and rate (0..1). The result
// is validated as New would validate it. Fault.String is the inverse.
func ParseFault(spec string) (Fault, error) {
	var f Fault
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, hasVal := strings.Cut(item, "=")
		var err error
		switch key {
		case "prefix":
			f.PathPrefix = val
		case "status":
			f.Status, err = strconv.Atoi(val)
		case "delay":
			f.Delay, err = time.ParseDuration(val)
		case "reset":
			f.Reset = true
			if hasVal {
				f.Reset, err = strconv.ParseBool(val)
			}
		case "rate":
			f.Rate, err = strconv.ParseFloat(val, 64)
		default:
			return Fault{}, fmt.Errorf("%w %q: unknown key %q (want prefix, status, delay, reset or rate)", ErrFaultSpec, spec, key)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("%w %q: %s: %w", ErrFaultSpec, spec, key, err)
		}
	}
	if err := f.validate(); err != nil {
		return Fault{}, fmt.Errorf("%w %q: %w", ErrFaultSpec, spec, err)
	}
	return f, nil
}

// String returns the ParseFault form of f.
func (f Fault) String() string {
	var parts []string
	if f.PathPrefix != "" {
		parts = append(parts, "prefix="+f.PathPrefix)
	}
	if f.Status != 0 {
		parts = append(parts, "status="+strconv.Itoa(f.Status))
	}
	if f.Delay != 0 {
		parts = append(parts, "delay="+f.Delay.String())
	}
	if f.Reset {
		parts = append(parts, "reset")
	}
	if f.Rate != 0 {
		parts = append(parts, "rate="+strconv.FormatFloat(f.Rate, 'g', -1, 64))
	}
	return strings.Join(parts, ",")
}
