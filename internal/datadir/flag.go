package datadir

import "github.com/spf13/pflag"

// FlagName is the flag (and config-file key) naming the data dir.
const FlagName = "data-dir"

// AddFlag registers --data-dir on fs, storing the normalised path in *p
// (which keeps its value, normally Default, until the flag is set). usage
// may say what the command does with it; empty gives the common text.
// Every command that takes a data dir registers it here, so each gets
// the same name, default and normalisation.
func AddFlag(fs *pflag.FlagSet, p *string, usage string) {
	if *p == "" {
		*p = Default
	}
	if usage == "" {
		usage = "directory for Cloudless state"
	}
	fs.Var((*flagValue)(p), FlagName, usage)
}

type flagValue string

func (v *flagValue) String() string { return string(*v) }
func (v *flagValue) Type() string   { return "dir" }
func (v *flagValue) Set(s string) error {
	d, err := New(s)
	if err != nil {
		return err
	}
	*v = flagValue(d)
	return nil
}
