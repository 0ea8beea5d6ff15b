//go:build tools

// Package deps pins the project's third-party modules in go.mod so that
// parallel work on separate packages never races on go.mod edits.
package deps

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/VictoriaMetrics/metrics"
	_ "github.com/caddyserver/certmagic"
	_ "github.com/cespare/xxhash/v2"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/valyala/fasthttp"
	_ "github.com/valyala/fasthttp/fasthttpadaptor"
	_ "golang.org/x/sync/singleflight"
	_ "gonum.org/v1/plot"
	_ "gopkg.in/yaml.v3"
)
