package step

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/shared"
)

// journalFile is the name of the journal inside RunnerConfig.StateDir.
const journalFile = "steps.json"

// journal is the agent's own record of which steps of which plan generation it finished.
// It complements the coordinator's record: a step that finished just before a power cut
// or a lost report is not run again. The coordinator's record wins when the two differ only
// in that the coordinator knows more (a step it records done is never rerun).
//
// Writes are atomic (temporary file, fsync, rename, fsync of the directory), so a crash
// leaves either the old or the new journal, never a torn one.
type journal struct {
	path string
	data journalData
}

type journalData struct {
	MachineID  shared.MachineID        `json:"machine_id"`
	Generation uint64                  `json:"generation"`
	Steps      map[string]journalEntry `json:"steps"`
}

type journalEntry struct {
	Status  shared.StepStatus `json:"status"`
	Attempt int               `json:"attempt"`
	// Digest is the SHA-256 of the step's JSON: an entry only counts for the very same step.
	Digest    string    `json:"digest"`
	UpdatedAt time.Time `json:"updated_at"`
}

// openJournal loads the journal in dir for the plan (id, generation). A journal for another
// machine or generation, or one that cannot be read, starts empty: every step is
// idempotent, so forgetting costs time, never correctness. dir == "" keeps it in memory.
func openJournal(dir string, id shared.MachineID, generation uint64) (*journal, error) {
	j := &journal{data: journalData{MachineID: id, Generation: generation, Steps: map[string]journalEntry{}}}
	if dir == "" {
		return j, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating step journal directory: %w", err)
	}
	j.path = filepath.Join(dir, journalFile)
	raw, err := os.ReadFile(j.path)
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading step journal: %w", err)
	}
	var old journalData
	if json.Unmarshal(raw, &old) != nil || old.MachineID != id || old.Generation != generation || old.Steps == nil {
		return j, nil
	}
	j.data = old
	return j, nil
}

// lookup returns the entry for step s, if it is for this very step.
func (j *journal) lookup(s shared.Step) (journalEntry, bool) {
	e, ok := j.data.Steps[s.Name]
	if !ok || e.Digest != stepDigest(s) {
		return journalEntry{}, false
	}
	return e, true
}

// record stores the state of step s and writes the journal to disk.
func (j *journal) record(s shared.Step, status shared.StepStatus, attempt int) error {
	j.data.Steps[s.Name] = journalEntry{Status: status, Attempt: attempt, Digest: stepDigest(s), UpdatedAt: time.Now().UTC()}
	return j.save()
}

func (j *journal) save() error {
	if j.path == "" {
		return nil
	}
	raw, err := json.MarshalIndent(j.data, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(j.path, raw, 0o600); err != nil {
		return fmt.Errorf("writing step journal: %w", err)
	}
	return nil
}

func stepDigest(s shared.Step) string {
	raw, _ := json.Marshal(s) // a Step always marshals
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}
