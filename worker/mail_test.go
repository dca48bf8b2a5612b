package worker

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/wneessen/go-mail"
)

// fakeSMTP accepts one mail over plain SMTP on loopback and returns what
// it received.
func fakeSMTP(tb testing.TB) (addr string, got <-chan string) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	ch := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		say := func(s string) { c.Write([]byte(s + "\r\n")) }
		say("220 fake ESMTP")
		var data strings.Builder
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if inData {
				if line == ".\r\n" {
					inData = false
					say("250 queued")
					continue
				}
				data.WriteString(line)
				continue
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				say("250 fake")
			case strings.HasPrefix(cmd, "MAIL FROM"), strings.HasPrefix(cmd, "RCPT TO"), strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "NOOP"):
				say("250 ok")
			case cmd == "DATA":
				inData = true
				say("354 go on")
			case cmd == "QUIT":
				say("221 bye")
				ch <- data.String()
				return
			default:
				say("502 not implemented")
			}
		}
	}()
	return ln.Addr().String(), ch
}

func TestSMTPDelivery(t *testing.T) {
	addr, got := fakeSMTP(t)
	m, err := newSMTP("smtp://" + addr + "?tls=none")
	if err != nil {
		t.Fatal(err)
	}
	msg := mail.NewMsg()
	msg.From("Therasync <noreply@therasync.invalid>")
	msg.To("jonas@praxis.de")
	msg.Subject("Test")
	msg.SetBodyString(mail.TypeTextPlain, "Ihr Zugangscode")
	if err := m.deliver(context.Background(), msg); err != nil {
		t.Fatalf("deliver = %v", err)
	}
	if data := <-got; !strings.Contains(data, "Subject: Test") || !strings.Contains(data, "Zugangscode") {
		t.Errorf("the SMTP server received %q; want the mail", data)
	}
}

func TestSMTPURLValidation(t *testing.T) {
	for _, u := range []string{"http://x", "smtp://", "smtp://h?tls=maybe", "smtp://h:port"} {
		if _, err := newSMTP(u); err == nil {
			t.Errorf("newSMTP(%q) = nil error; want refused", u)
		}
	}
	for _, u := range []string{"smtp://mail.example.org", "smtp://u:p@mail.example.org:2525?tls=tls"} {
		if _, err := newSMTP(u); err != nil {
			t.Errorf("newSMTP(%q) = %v; want ok", u, err)
		}
	}
}
