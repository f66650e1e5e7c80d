//go:build !race

package iocp

const raceEnabled = false
