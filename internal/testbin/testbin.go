// Package testbin builds the project's binaries and runs them as child
// processes for end-to-end tests.
package testbin

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the main package pkg (an import path) into a temporary
// directory and returns the binary's path.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Proc is a running child process whose output is captured.
type Proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
	err    error
}

// Start runs bin with args and extra environment variables; the process is
// killed when the test ends if it still runs.
func Start(tb testing.TB, bin string, env []string, args ...string) *Proc {
	tb.Helper()
	p := &Proc{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = (*lockedWriter)(p)
	p.cmd.Stderr = (*lockedWriter)(p)
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.exited
		if tb.Failed() {
			tb.Logf("output of %s:\n%s", filepath.Base(bin), p.Output())
		}
	})
	return p
}

type lockedWriter Proc

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

// Output returns what the process printed so far (stdout and stderr).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Signal sends sig to the process, if it still runs.
func (p *Proc) Signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit; it reports whether it did,
// and its exit error (nil for exit status 0).
func (p *Proc) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.exited:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// StartServer starts a server binary on a free loopback address, made into
// its environment and arguments by env and args, and waits until
// http://addr/healthz answers 200. A port taken between finding it free and
// the server binding it is retried with another one.
func StartServer(tb testing.TB, bin string, env func(addr string) []string, args func(addr string) []string, within time.Duration) (*Proc, string) {
	tb.Helper()
	for attempt := 0; ; attempt++ {
		addr := FreeAddr(tb)
		p := Start(tb, bin, env(addr), args(addr)...)
		if err := waitHTTP(p, "http://"+addr+"/healthz", within); err == nil {
			return p, addr
		} else if attempt < 5 && strings.Contains(p.Output(), "address already in use") {
			continue
		} else {
			tb.Fatalf("%v\n%s", err, p.Output())
		}
	}
}

// WaitHTTP polls url until it answers 200 or d passes.
func WaitHTTP(tb testing.TB, p *Proc, url string, d time.Duration) {
	tb.Helper()
	if err := waitHTTP(p, url, d); err != nil {
		tb.Fatalf("%v\n%s", err, p.Output())
	}
}

func waitHTTP(p *Proc, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("process exited before %s answered: %v", url, p.err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %v: %v", url, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// String describes the process.
func (p *Proc) String() string { return fmt.Sprintf("pid %d", p.cmd.Process.Pid) }
