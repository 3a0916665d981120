// Command echo is the HTTP echo server of Lotse's own tests. Its image holds
// only this static binary (no shell, no curl), so it is also the client the
// tests run inside pods:
//
//	echo [serve]            serve HTTP on :8080 ($PORT overrides; -proxy-protocol: behind a
//	                          balancer that sends the PROXY header); with
//	                          -tls-cert/-tls-key also webhooks on :8443 (webhooks.go)
//	                          GET /         hello from <hostname> (you are <remote addr>)
//	                          GET /healthz  ok
//	echo get [-k] URL       GET URL, print the body; exit 1 unless the status is 2xx
//	echo write FILE TEXT    write TEXT to FILE (volume tests)
//	echo read FILE          print FILE
//	echo spin DURATION      keep one CPU busy for DURATION (autoscaling tests)
//
// e.g. kubectl exec POD -- /echo get http://web.default.svc:8080/
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "get":
		err = get(args)
	case "write":
		if len(args) != 2 {
			usage()
			os.Exit(2)
		}
		err = os.WriteFile(args[0], []byte(args[1]), 0o644)
	case "spin":
		var d time.Duration
		if len(args) != 1 {
			usage()
			os.Exit(2)
		}
		if d, err = time.ParseDuration(args[0]); err == nil {
			for end := time.Now().Add(d); time.Now().Before(end); {
			}
		}
	case "read":
		if len(args) != 1 {
			usage()
			os.Exit(2)
		}
		var data []byte
		if data, err = os.ReadFile(args[0]); err == nil {
			_, err = os.Stdout.Write(data)
		}
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage:\n  echo [serve]           serve HTTP on :8080 ($PORT overrides)\n  echo get [-k] [-timeout 10s] URL\n  echo write FILE TEXT\n  echo read FILE\n  echo spin DURATION\n")
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	tlsCert := fs.String("tls-cert", "", "also serve the webhooks over HTTPS with this certificate (see webhooks.go)")
	tlsKey := fs.String("tls-key", "", "the key of -tls-cert")
	tlsPort := fs.String("tls-port", "8443", "port of the HTTPS server")
	proxyProtocol := fs.Bool("proxy-protocol", false, "expect a PROXY protocol header (v1 or v2) on every HTTP connection and report the client it names")
	if err := fs.Parse(args); err != nil {
		return err
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello from %s (you are %s)\n", hostname, r.RemoteAddr)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	if *proxyProtocol {
		ln = proxyListener{ln}
	}
	log.Printf("listening on %s", ln.Addr())

	// As PID 1 of its container nothing stops it but its own handler.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if *tlsCert != "" {
		tlsSrv := &http.Server{Addr: ":" + *tlsPort, Handler: webhookMux(hostname), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- tlsSrv.ListenAndServeTLS(*tlsCert, *tlsKey) }()
		defer tlsSrv.Close()
		log.Printf("serving webhooks on :%s", *tlsPort)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	insecure := fs.Bool("k", false, "do not verify the server's TLS certificate")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one URL, got %d arguments", fs.NArg())
	}
	url := fs.Arg(0)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	client := &http.Client{Transport: tr, Timeout: *timeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
