package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// DefaultConfigFile is read when --config is not given; it may be absent.
const DefaultConfigFile = "/etc/cloudless/config.yaml"

// configure fills the flags of cmd that were not given on the command line,
// first from CLOUDLESS_<FLAG_NAME>, then from the config file, whose keys
// are the flag names:
//
//	data-dir: /srv/cloudless
//	tls-san: [k8s.example.net, 192.0.2.10]
//
// With strict, a key that is not one of cmd's flags is an error (the file is
// this command's); otherwise such keys are ignored (other commands read the
// server's file only for what they share with it, such as data-dir).
func configure(cmd *cobra.Command, strict bool) error {
	path, explicit := DefaultConfigFile, false
	if f := cmd.Flags().Lookup("config"); f != nil && f.Changed {
		path, explicit = f.Value.String(), true
	} else if v, ok := os.LookupEnv("CLOUDLESS_CONFIG"); ok {
		path, explicit = v, true
	}
	file, err := readConfigFile(path, explicit)
	if err != nil {
		return err
	}
	var errs []error
	known := map[string]bool{"config": true}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		known[f.Name] = true
		if f.Changed || f.Name == "config" {
			return
		}
		env := "CLOUDLESS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := setFromFile(f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: key %q: %w", path, f.Name, err))
			}
		}
	})
	if strict {
		var unknown []string
		for k := range file {
			if !known[k] {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		for _, k := range unknown {
			errs = append(errs, fmt.Errorf("%s: unknown key %q: keys are the flag names of `cloudless %s` (see --help)", path, k, cmd.Name()))
		}
	}
	return errors.Join(errs...)
}

// readConfigFile returns the file's keys; a missing default file, or the
// path "", is empty.
func readConfigFile(path string, explicit bool) (map[string]any, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	var m map[string]any
	if err := yaml.UnmarshalStrict(b, &m, func(d *json.Decoder) *json.Decoder { d.UseNumber(); return d }); err != nil {
		return nil, fmt.Errorf("config file %s is not a YAML map of flag names to values: %w", path, err)
	}
	return m, nil
}

// setFromFile sets f from a YAML value: a scalar, or a list for flags that
// take several values.
func setFromFile(f *pflag.Flag, v any) error {
	list, isList := v.([]any)
	sv, isSlice := f.Value.(pflag.SliceValue)
	switch {
	case isList && isSlice:
		items := make([]string, 0, len(list))
		for _, it := range list {
			s, err := scalar(it)
			if err != nil {
				return err
			}
			items = append(items, s)
		}
		return sv.Replace(items)
	case isList:
		return fmt.Errorf("takes one value, not a list")
	}
	s, err := scalar(v)
	if err != nil {
		return err
	}
	if isSlice {
		return sv.Replace([]string{s})
	}
	return f.Value.Set(s)
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool, json.Number:
		return fmt.Sprint(v), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("value %v is neither a string, a number nor a boolean", v)
}

// addConfigFlag adds --config to cmd.
func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String("config", DefaultConfigFile, "YAML file of flag names to values (CLOUDLESS_CONFIG; \"\" for none); flags and CLOUDLESS_<FLAG> variables take precedence")
}
