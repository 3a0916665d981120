// Command testsummary reads `go test -json` on stdin, prints the tests'
// output as `go test -v` would, and ends with every failed test's own
// output again. The end-to-end tests run in parallel for most of an hour:
// their output interleaves, and a log cut to its last lines (as CI shows
// it) would otherwise lose the lines that say why a test failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// event is the part of test2json's TestEvent this needs.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// What the summary repeats of one test: its first lines (what it set up,
// often the first error) and its last (t.Error, the diagnosis after it).
const (
	headLines = 15
	tailLines = 45
)

func main() {
	// Ctrl-C reaches the whole pipeline: go test must see its tests end
	// and clean up (TestMain stops every process), which it cannot when
	// its output has nowhere to go.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	failed, err := relay(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		_, _ = io.Copy(os.Stdout, os.Stdin) // the rest as it is
		os.Exit(1)
	}
	summarize(os.Stdout, failed)
}

// failure is one failed test and its own output lines, in order.
type failure struct {
	name  string
	lines []string
}

// relay copies the output to w and returns the failed tests, in the order
// they failed, and then the tests that never ended (go test's timeout
// panics while they run, and sends no event for them). A line that is not
// JSON (go test's own messages before the test binary runs, a build
// error) is passed on as it is.
func relay(r io.Reader, w io.Writer) ([]failure, error) {
	output := map[string][]string{}
	var started []event // in the order their output began
	var failed []failure
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		if e.Output != "" {
			fmt.Fprint(w, e.Output)
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if _, ok := output[key]; !ok {
				started = append(started, e)
			}
			output[key] = append(output[key], strings.TrimRight(e.Output, "\n"))
		case "fail":
			failed = append(failed, failure{name: name(e), lines: output[key]})
			delete(output, key)
		case "pass", "skip":
			delete(output, key)
		}
	}
	for _, e := range started {
		if lines, ok := output[e.Package+" "+e.Test]; ok {
			failed = append(failed, failure{name: name(e) + " (did not finish)", lines: lines})
		}
	}
	return failed, sc.Err()
}

func name(e event) string {
	if e.Test == "" {
		return "package " + e.Package
	}
	return e.Test
}

// summarize repeats each failed test's output (its last lines when there
// are many), leaving out the lines go test writes around every test.
func summarize(w io.Writer, failed []failure) {
	if len(failed) == 0 {
		return
	}
	fmt.Fprintf(w, "\n=== %d failed (tests and subtests); their output again:\n", len(failed))
	for _, f := range failed {
		var own []string
		for _, l := range f.lines {
			t := strings.TrimSpace(l)
			if strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
				continue
			}
			own = append(own, l)
		}
		fmt.Fprintf(w, "--- %s\n", f.name)
		if len(own) > headLines+tailLines {
			left := len(own) - headLines - tailLines
			own = append(append(own[:headLines:headLines], fmt.Sprintf("    [%d lines left out]", left)), own[len(own)-tailLines:]...)
		}
		for _, l := range own {
			fmt.Fprintln(w, l)
		}
	}
}
