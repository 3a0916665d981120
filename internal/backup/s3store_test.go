package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/backup/s3test"
)

func newTestS3Store(t *testing.T, srv s3test.Server, prefix string) *S3Store {
	t.Helper()
	s, err := NewS3Store(S3Config{
		Endpoint:        srv.Endpoint,
		Bucket:          srv.Bucket,
		Prefix:          prefix,
		Region:          "us-east-1",
		AccessKeyID:     srv.AccessKeyID,
		SecretAccessKey: srv.SecretAccessKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// randomData is n reproducible pseudo-random bytes.
func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// onlyReader hides every interface but io.Reader (no Seek, no ReadAt, no
// Len), as a pipe from a snapshot stream would.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestS3Store(t *testing.T) {
	srv := s3test.Start(t)

	t.Run("round trip", func(t *testing.T) {
		ctx := testContext(t)
		s := newTestS3Store(t, srv, "roundtrip/")
		const mib = 1 << 20
		tests := []struct {
			name  string
			n     int
			known bool // size passed to Put; else -1
		}{
			{"empty-known.db", 0, true},
			{"empty-unknown.db", 0, false},
			{"small-known.db", 1000, true},
			{"small-unknown.db", 1000, false},
			{"3mib-known.db", 3 * mib, true},
			{"3mib-unknown.db", 3 * mib, false},
			// Past the part size: a multipart upload, in two parts.
			{"20mib-known.db", 20 * mib, true},
			{"20mib-unknown.db", 20*mib + 7, false},
		}
		start := time.Now()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				data := randomData(tt.n, uint64(i))
				size := int64(-1)
				if tt.known {
					size = int64(len(data))
				}
				if err := s.Put(ctx, tt.name, onlyReader{bytes.NewReader(data)}, size); err != nil {
					t.Fatal(err)
				}
				rc, err := s.Get(ctx, tt.name)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				got, err := io.ReadAll(rc)
				if err != nil {
					t.Fatal(err)
				}
				if sha256.Sum256(got) != sha256.Sum256(data) {
					t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(data))
				}
			})
		}
		objs, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != len(tests) {
			t.Fatalf("List gave %d files, want %d: %v", len(objs), len(tests), objs)
		}
		sizes := map[string]int{}
		for _, tt := range tests {
			sizes[tt.name] = tt.n
		}
		for _, o := range objs {
			if int64(sizes[o.Name]) != o.Size {
				t.Errorf("%s: size %d, want %d", o.Name, o.Size, sizes[o.Name])
			}
			if o.Modified.Before(start.Add(-time.Minute)) || o.Modified.After(time.Now().Add(time.Minute)) {
				t.Errorf("%s: modified %s, want about %s", o.Name, o.Modified, start)
			}
		}
	})

	t.Run("overwrite", func(t *testing.T) {
		ctx := testContext(t)
		s := newTestS3Store(t, srv, "overwrite")
		for _, content := range []string{"first version, longer", "second"} {
			if err := s.Put(ctx, "snap.db", strings.NewReader(content), -1); err != nil {
				t.Fatal(err)
			}
		}
		rc, err := s.Get(ctx, "snap.db")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, _ := io.ReadAll(rc); string(got) != "second" {
			t.Fatalf("got %q, want the second version", got)
		}
	})

	t.Run("list sorted and prefixes isolated", func(t *testing.T) {
		ctx := testContext(t)
		stores := []struct {
			prefix string
			names  []string
		}{
			{"", []string{"top.db"}},
			{"cluster-a/", []string{"c.db", "a.db", "b-2.db", "b-10.db"}},
			{"cluster-a/nested/", []string{"deep.db"}},
			{"cluster-ab/", []string{"z.db", "a.db"}},
			{"team/cluster-b/", []string{"a.db"}},
			{"empty/", nil},
		}
		for _, st := range stores {
			s := newTestS3Store(t, srv, "lists/"+st.prefix)
			for _, n := range st.names {
				if err := s.Put(ctx, n, strings.NewReader(st.prefix+n), int64(len(st.prefix+n))); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, st := range stores {
			t.Run("prefix="+st.prefix, func(t *testing.T) {
				objs, err := newTestS3Store(t, srv, "lists/"+st.prefix).List(ctx)
				if err != nil {
					t.Fatal(err)
				}
				want := append([]string(nil), st.names...)
				slices.Sort(want)
				var got []string
				for _, o := range objs {
					got = append(got, o.Name)
					if o.Size != int64(len(st.prefix+o.Name)) {
						t.Errorf("%s: size %d, want %d", o.Name, o.Size, len(st.prefix+o.Name))
					}
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("List = %v, want %v", got, want)
				}
			})
		}
	})

	t.Run("missing files", func(t *testing.T) {
		ctx := testContext(t)
		s := newTestS3Store(t, srv, "missing/")
		if _, err := s.Get(ctx, "nope.db"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a missing file: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "nope.db"); err != nil {
			t.Fatalf("Delete of a missing file: %v", err)
		}
		if err := s.Put(ctx, "there.db", strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "there.db"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "there.db"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a deleted file: %v, want ErrNotFound", err)
		}
		if objs, err := s.List(ctx); err != nil || len(objs) != 0 {
			t.Fatalf("List after Delete = %v, %v; want nothing", objs, err)
		}
	})

	t.Run("invalid names", func(t *testing.T) {
		ctx := testContext(t)
		s := newTestS3Store(t, srv, "names/")
		for _, name := range []string{"", ".", "..", "a/b", "../x"} {
			if err := s.Put(ctx, name, strings.NewReader("x"), 1); err == nil {
				t.Errorf("Put(%q) succeeded", name)
			}
		}
	})

	t.Run("check", func(t *testing.T) {
		tests := []struct {
			name    string
			cfg     func(c *S3Config)
			wantErr []string // substrings of the error; nil: no error
		}{
			{"good", func(*S3Config) {}, nil},
			{"good without region", func(c *S3Config) { c.Region = "" }, nil},
			{"wrong secret", func(c *S3Config) { c.SecretAccessKey += "x" },
				[]string{srv.Endpoint, srv.Bucket, "secret access key"}},
			{"unknown access key", func(c *S3Config) { c.AccessKeyID = "nobody" },
				[]string{srv.Endpoint, srv.Bucket}},
			{"missing bucket", func(c *S3Config) { c.Bucket = "no-such-bucket" },
				[]string{"bucket no-such-bucket does not exist at " + srv.Endpoint, "spec.backup.s3.bucket"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cfg := S3Config{
					Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "check/", Region: "us-east-1",
					AccessKeyID: srv.AccessKeyID, SecretAccessKey: srv.SecretAccessKey,
				}
				tt.cfg(&cfg)
				s, err := NewS3Store(cfg)
				if err != nil {
					t.Fatal(err)
				}
				err = s.Check(testContext(t))
				if tt.wantErr == nil {
					if err != nil {
						t.Fatalf("Check: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatal("Check succeeded")
				}
				t.Logf("Check: %v", err)
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Check error %q does not mention %q", err, w)
					}
				}
				if strings.Contains(err.Error(), cfg.SecretAccessKey) {
					t.Errorf("Check error %q shows the secret", err)
				}
				// The data operations fail the same way.
				perr := s.Put(testContext(t), "x.db", strings.NewReader("x"), 1)
				if perr == nil || !strings.Contains(perr.Error(), srv.Endpoint) {
					t.Errorf("Put error %v does not name the endpoint", perr)
				}
				if _, gerr := s.Get(testContext(t), "x.db"); gerr == nil || errors.Is(gerr, ErrNotFound) {
					t.Errorf("Get error %v, want a failure that is not ErrNotFound", gerr)
				}
			})
		}
	})

	t.Run("server gone", func(t *testing.T) {
		gone := s3test.Start(t)
		s := newTestS3Store(t, gone, "gone/")
		ctx := testContext(t)
		if err := s.Check(ctx); err != nil {
			t.Fatalf("Check before the server stops: %v", err)
		}
		gone.Stop()
		start := time.Now()
		err := s.Check(ctx)
		if err == nil {
			t.Fatal("Check succeeded with the server stopped")
		}
		if !strings.Contains(err.Error(), gone.Endpoint) || !strings.Contains(err.Error(), "reachable") {
			t.Errorf("Check error %q does not say that %s is unreachable", err, gone.Endpoint)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("Check took %s to notice", d)
		}
		t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})
}

func TestNewS3StoreConfig(t *testing.T) {
	base := S3Config{Endpoint: "https://s3.example.test:9000", Bucket: "backups", Prefix: "prod/eu", AccessKeyID: "AKID", SecretAccessKey: "SECRET"}
	tests := []struct {
		name    string
		cfg     func(c *S3Config)
		want    string // String(), if no error
		wantErr string
	}{
		{"https", func(*S3Config) {}, "s3://backups/prod/eu/ at https://s3.example.test:9000", ""},
		{"http loopback, root prefix", func(c *S3Config) { c.Endpoint = "http://127.0.0.1:7070/"; c.Prefix = "" }, "s3://backups/ at http://127.0.0.1:7070", ""},
		{"leading slash", func(c *S3Config) { c.Prefix = "/a/b/" }, "s3://backups/a/b/ at https://s3.example.test:9000", ""},
		{"no scheme", func(c *S3Config) { c.Endpoint = "s3.example.test:9000" }, "", "not a URL like https://host:port"},
		{"ftp", func(c *S3Config) { c.Endpoint = "ftp://s3.example.test" }, "", "scheme must be https"},
		{"path", func(c *S3Config) { c.Endpoint = "https://s3.example.test/bucket" }, "", "just scheme://host:port"},
		{"credentials in URL", func(c *S3Config) { c.Endpoint = "https://AKID:SECRET@s3.example.test" }, "", "must not hold credentials"},
		{"no bucket", func(c *S3Config) { c.Bucket = "" }, "", "no bucket"},
		{"bad CA bundle", func(c *S3Config) { c.CABundle = []byte("not a certificate") }, "", "no PEM certificate"},
		{"CA bundle for http", func(c *S3Config) { c.Endpoint = "http://127.0.0.1:1"; c.CABundle = []byte("x") }, "", "not https"},
		{"empty prefix segment", func(c *S3Config) { c.Prefix = "a//b" }, "", "empty path segment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.cfg(&cfg)
			s, err := NewS3Store(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Fatalf("error %q shows the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
