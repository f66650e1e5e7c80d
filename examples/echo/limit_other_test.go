//go:build !unix

package main

import "math"

// fdLimit is the number of files the process may open: no limit that a
// benchmark needs to know of.
func fdLimit() uint64 { return math.MaxUint64 }
