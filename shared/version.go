package shared

// Version is the one version stamp shared by rivet and rivet-agent. The Makefile sets it
// with -ldflags "-X github.com/rivetmetal/rivet/shared.Version=...".
var Version = "dev"
