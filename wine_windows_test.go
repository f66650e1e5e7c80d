package iocp

import (
	"sync"
	"syscall"
)

// underWine reports whether the tests run under Wine, whose ntdll exports
// wine_get_version; Windows' own does not.
var underWine = sync.OnceValue(func() bool {
	return syscall.NewLazyDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
})
