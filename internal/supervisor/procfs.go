package supervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Environment variables that mark a process as ours. They survive a restart
// of lotse (they live in /proc/PID/environ), so a new supervisor finds and
// adopts what an earlier one started, even if it died before writing anything
// down.
const (
	envOwner = "LOTSE_SUPERVISOR"
	envName  = "LOTSE_PROCESS"
	envHash  = "LOTSE_PROCESS_SPEC"
)

// Found is a running process that carries an owner's marker.
type Found struct {
	PID       int
	StartTime uint64
	Name      string
	SpecHash  string
}

// FindProcesses lists the live processes started by the supervisor with the
// given owner id.
func FindProcesses(owner string) []Found {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Found
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(envOwner+"="+owner)) {
			continue
		}
		vars := map[string]string{}
		for _, kv := range bytes.Split(env, []byte{0}) {
			k, v, ok := strings.Cut(string(kv), "=")
			if ok && strings.HasPrefix(k, "LOTSE_") {
				vars[k] = v
			}
		}
		if vars[envOwner] != owner || vars[envName] == "" {
			continue
		}
		st, state, ok := procStat(pid)
		if !ok || state == "Z" {
			continue
		}
		// Children inherit the markers (containerd's shims do), but only the
		// process the supervisor started leads its own session.
		if !sessionLeader(pid) {
			continue
		}
		out = append(out, Found{PID: pid, StartTime: st, Name: vars[envName], SpecHash: vars[envHash]})
	}
	return out
}

// procStat returns a process's start time (in clock ticks since boot) and
// state letter. The start time tells a process apart from a later one that
// happens to get the same PID.
func procStat(pid int) (uint64, string, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// The command name (field 2) may contain spaces and parentheses; fields
	// after it start behind the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, "", false
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return 0, "", false
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return st, fields[0], true
}

// sessionLeader reports whether pid leads its session (field 6 of stat).
func sessionLeader(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(string(data[i+1:]))
	return len(fields) > 3 && fields[3] == strconv.Itoa(pid)
}

// alive reports whether the process with pid and start time still runs.
func alive(pid int, startTime uint64) bool {
	st, state, ok := procStat(pid)
	return ok && st == startTime && state != "Z" && state != "X"
}

// signalGroup signals the process group of pid (our processes lead their own
// session), falling back to the process alone.
func signalGroup(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}
