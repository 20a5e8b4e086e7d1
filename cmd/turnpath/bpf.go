package main

// bpfDoctor adapts the loader to doctor.BPF. (Wired to package loader once it exists.)
type bpfDoctor struct{}

func (bpfDoctor) Load() (func() error, error) { return nil, errNoLoader }
func (bpfDoctor) Attach(int) (string, func() error, error) {
	return "", nil, errNoLoader
}

var errNoLoader = errorString("bpf loader not built in")

type errorString string

func (e errorString) Error() string { return string(e) }
