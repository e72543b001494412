package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

const importUsage = "rivet machines import -f FILE.csv|FILE.yaml [--output json]"

func machinesImport(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines import", importUsage)
	file := v.fs.String("f", "", "expected machines: CSV with a header row, or YAML/JSON "+
		"(packaging/config/expected.example.csv, expected.example.yaml); all rows or none")
	if err := v.parse(args); err != nil {
		return err
	}
	// Checked here first, every row: each bad one is reported with its line and field,
	// and nothing is sent while any is bad. The BMC passwords are read here, from the
	// files and environment variables the rows name, and travel only inside the request.
	req, err := readImport(*file, os.LookupEnv)
	if err != nil {
		return err
	}
	return call(v, func(c *shared.Client) (*shared.ImportResponse, error) { return c.ImportExpected(ctx, req) },
		func(w io.Writer, res *shared.ImportResponse) { fmt.Fprintln(w, res.Message) })
}

// readImport reads and checks an import file, resolving its BMC password references;
// lookupEnv is os.LookupEnv outside tests.
func readImport(file string, lookupEnv func(string) (string, bool)) (*shared.ImportRequest, error) {
	if file == "" {
		return nil, fmt.Errorf("-f FILE is required (see packaging/config/expected.example.csv and expected.example.yaml)")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	f, err := shared.ParseImportFile(file, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	req, err := f.Check(passwordResolver(filepath.Dir(file), lookupEnv))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return req, nil
}

// passwordResolver reads a row's BMC password from the file or environment variable it
// names. A relative password_file is relative to the import file's directory. Like ssh
// with a private key, a password file that its group or others may read (or write) is
// refused, not warned about: a BMC password opens the machine's console and power.
func passwordResolver(dir string, lookupEnv func(string) (string, bool)) func(b *shared.BMC) error {
	return func(b *shared.BMC) error {
		if b.PasswordFile != "" && b.PasswordEnv != "" {
			return &shared.FieldError{Field: "password_file", Err: errors.New("give password_file or password_env, not both")}
		}
		var pw string
		if name := b.PasswordEnv; name != "" {
			v, ok := lookupEnv(name)
			if !ok || v == "" {
				return &shared.FieldError{Field: "password_env",
					Err: fmt.Errorf("environment variable %s is not set (export it in the shell that runs the import)", name)}
			}
			pw = v
		} else {
			var err error
			if pw, err = readPasswordFile(dir, b.PasswordFile); err != nil {
				return &shared.FieldError{Field: "password_file", Err: err}
			}
		}
		if pw == "" || len(pw) > shared.MaxBMCPassword || strings.ContainsAny(pw, "\x00\n\r") {
			field := "password_file"
			if b.PasswordEnv != "" {
				field = "password_env"
			}
			return &shared.FieldError{Field: field,
				Err: fmt.Errorf("the password must be one line of 1 to %d bytes", shared.MaxBMCPassword)}
		}
		b.Password, b.PasswordFile, b.PasswordEnv = pw, "", ""
		return nil
	}
}

func readPasswordFile(dir, name string) (string, error) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("password file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("password file %s may be read or written by its group or others (mode %04o): "+
			"`chmod 600 %s` (refused, as ssh refuses such a private key)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	return pw, nil
}
