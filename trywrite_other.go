//go:build !unix

package iocp

// rawWriter is unused here: every Write runs on the write lane's
// goroutine.
type rawWriter struct{}

func newRawWriter(any) *rawWriter { return nil }

func (*rawWriter) try([]byte) int { return 0 }
