//go:build !windows

package iocp

import (
	"context"
	"fmt"
	"runtime"
)

// There is no native backend here: NewPort refuses WithNative, and no
// port has a nativePort, whose methods are never called.
type (
	nativePort struct{}
	thread     struct{}
)

var _ backend = (*nativePort)(nil)

func newNative(concurrency, queueLimit int) (*nativePort, error) {
	return nil, fmt.Errorf("iocp: WithNative: no native completion ports on %s; the pure-Go port runs everywhere", runtime.GOOS)
}

func (*nativePort) post(*Packet) error                                        { return ErrClosed }
func (*nativePort) get(*thread, context.Context, []Packet, bool) (int, error) { return 0, ErrClosed }
func (*nativePort) attach(*thread)                                            {}
func (*nativePort) current(*thread) bool                                      { return true }
func (*nativePort) detach(*thread)                                            {}
func (*nativePort) interrupt(*thread)                                         {}
func (*nativePort) seal()                                                     {}
func (*nativePort) len() int                                                  { return 0 }
func (*nativePort) close(func(*Packet)) int                                   { return 0 }
