//go:build tools

// Package peers pins the linters bench/lint compares against, built from
// their Go modules (kube-linter's host is not reachable from here).
package peers

import _ "github.com/zegl/kube-score/cmd/kube-score"
