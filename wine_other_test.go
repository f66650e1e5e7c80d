//go:build !windows

package iocp

// underWine reports whether the tests run under Wine: never, off Windows.
func underWine() bool { return false }
