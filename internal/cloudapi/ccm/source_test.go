package ccm

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSourceImports: the command and its provider build inside any
// release's work module, which has k8s.io modules and the standard
// library only, so they import nothing else of Lotse or elsewhere.
func TestSourceImports(t *testing.T) {
	err := fs.WalkDir(source, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := source.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, data, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(p, "/")
			switch {
			case p == ModulePath+"/"+dir+"/provider":
			case first == "k8s.io":
			case !strings.Contains(first, "."): // the standard library
			default:
				t.Errorf("%s imports %s: the release build cannot provide it", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteModule: the module holds go.mod and the packages' sources,
// not their tests.
func TestWriteModule(t *testing.T) {
	root := filepath.Join(t.TempDir(), "src")
	if err := WriteModule(root); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(gomod), "module "+ModulePath+"\n") {
		t.Fatalf("go.mod: %q, %v", gomod, err)
	}
	var files []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
		}
		return nil
	})
	want := map[string]bool{"go.mod": true, dir + "/cmd/main.go": true, dir + "/provider/provider.go": true}
	if len(files) != len(want) {
		t.Errorf("files %v, want %v", files, want)
	}
	for _, f := range files {
		if !want[f] {
			t.Errorf("unexpected %s", f)
		}
	}
}
