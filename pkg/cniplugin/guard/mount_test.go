package guard_test

import "golang.org/x/sys/unix"

func mountBind(src, dst string) error { return unix.Mount(src, dst, "none", unix.MS_BIND, "") }
