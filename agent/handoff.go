package agent

import (
	"encoding/json"
	"errors"
)

// InstalledFiles returns what the installed OS's agent needs to carry on as this
// machine: its config file (config.InstalledFile) and the state file holding this
// machine's id and token, in the format the agent keeps in its state dir. The handoff
// step writes both into the installed root file system.
func (a *Agent) InstalledFiles() (configFile, state []byte, stateName string, err error) {
	a.mu.Lock()
	kept := keptState{MachineID: a.id, MachineToken: a.token}
	a.mu.Unlock()
	if kept.MachineToken == "" {
		return nil, nil, "", errors.New("the agent holds no machine token yet")
	}
	configFile, err = a.cfg.InstalledFile()
	if err != nil {
		return nil, nil, "", err
	}
	state, err = json.Marshal(kept)
	return configFile, state, stateFile, err
}
