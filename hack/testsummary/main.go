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
	"strings"
)

// event is the part of test2json's TestEvent this needs.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// maxLinesPerTest bounds what the summary repeats of one test: the lines
// that matter are near its end (t.Error, the diagnosis after it).
const maxLinesPerTest = 60

func main() {
	failed, err := relay(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
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
// they failed. A line that is not JSON (go test's own messages before the
// test binary runs, a build error) is passed on as it is.
func relay(r io.Reader, w io.Writer) ([]failure, error) {
	output := map[string][]string{}
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
			output[key] = append(output[key], strings.TrimRight(e.Output, "\n"))
		case "fail":
			failed = append(failed, failure{name: name(e), lines: output[key]})
			delete(output, key)
		case "pass", "skip":
			delete(output, key)
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
		if len(own) > maxLinesPerTest {
			fmt.Fprintf(w, "    [%d earlier lines left out]\n", len(own)-maxLinesPerTest)
			own = own[len(own)-maxLinesPerTest:]
		}
		for _, l := range own {
			fmt.Fprintln(w, l)
		}
	}
}
