package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/shared"
)

// stateFile holds the machine token between restarts. It is a secret: mode 0600 in a
// 0700 directory, written atomically so a power cut leaves the old or the new file.
const stateFile = "machine.json"

type keptState struct {
	MachineID    shared.MachineID `json:"machine_id"`
	MachineToken string           `json:"machine_token"`
}

// loadState returns the kept state, nil when there is none.
func loadState(dir string) (*keptState, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s keptState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %v", filepath.Join(dir, stateFile), err)
	}
	if err := s.MachineID.Validate(); err != nil || s.MachineToken == "" {
		return nil, fmt.Errorf("%s lacks a machine id or token", filepath.Join(dir, stateFile))
	}
	return &s, nil
}

// saveState writes the state atomically (a power cut leaves the old or the new file).
func saveState(dir string, s *keptState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFile), data, 0o600)
}

func removeState(dir string) error {
	err := os.Remove(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
