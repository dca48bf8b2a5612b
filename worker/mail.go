package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/wneessen/go-mail"

	"github.com/therasync/therasync/store"
)

// TypeMail sends one mail to an account; payload MailPayload.
const TypeMail = "mail:send"

// The kinds of mail.
const (
	MailAccessCode = "access_code"
	MailNewDevice  = "new_device"
)

// MailPayload is the payload of a TypeMail task. The access code travels
// sealed with the server's secret: Redis never holds it in plain text.
type MailPayload struct {
	Tenant  string    `json:"tenant"`
	Account string    `json:"account"`
	Kind    string    `json:"kind"`
	Code    []byte    `json:"code,omitempty"` // sealed
	Expires time.Time `json:"expires,omitzero"`
	Device  string    `json:"device,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// SendCode enqueues the mail that gives an account its access code.
func (q *Queue) SendCode(ctx context.Context, tenant, account, code string, expires time.Time) error {
	if q.mailBox == nil {
		return errors.New("send code: the queue has no secret")
	}
	return q.enqueueMail(ctx, MailPayload{Tenant: tenant, Account: account, Kind: MailAccessCode, Code: q.mailBox.Seal([]byte(code)), Expires: expires})
}

// SendLoginNotice enqueues the mail that tells an account of a login on a
// new device.
func (q *Queue) SendLoginNotice(ctx context.Context, tenant, account, device string, at time.Time) error {
	return q.enqueueMail(ctx, MailPayload{Tenant: tenant, Account: account, Kind: MailNewDevice, Device: device, At: at})
}

func (q *Queue) enqueueMail(ctx context.Context, p MailPayload) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("enqueue mail: %w", err)
	}
	if _, err := q.client.EnqueueContext(ctx, asynq.NewTask(TypeMail, b), asynq.Queue(QueueCritical),
		asynq.MaxRetry(8), asynq.Timeout(time.Minute), asynq.Retention(0)); err != nil {
		return fmt.Errorf("enqueue mail: %w", err)
	}
	return nil
}

// mailer delivers composed mails: through SMTP, or into an outbox folder.
type mailer interface {
	deliver(ctx context.Context, m *mail.Msg) error
}

// outbox writes each mail as an .eml file into a folder.
type outbox struct{ dir string }

func (o outbox) deliver(_ context.Context, m *mail.Msg) error {
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(b) + ".eml"
	tmp := filepath.Join(o.dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := m.WriteTo(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(o.dir, name))
}

// smtpMailer sends through an SMTP server.
type smtpMailer struct{ client *mail.Client }

func (s smtpMailer) deliver(ctx context.Context, m *mail.Msg) error {
	return s.client.DialAndSendWithContext(ctx, m)
}

// newSMTP parses smtp://[user:pass@]host[:port][?tls=starttls|tls|none]
// (STARTTLS by default; "none" only for a local relay).
func newSMTP(rawURL string) (smtpMailer, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "smtp" || u.Hostname() == "" {
		return smtpMailer{}, fmt.Errorf("SMTP_URL: want smtp://[user:pass@]host[:port][?tls=starttls|tls|none]")
	}
	opts := []mail.Option{}
	port := 587
	switch u.Query().Get("tls") {
	case "", "starttls":
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case "tls":
		opts = append(opts, mail.WithSSL())
		port = 465
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
		port = 25
	default:
		return smtpMailer{}, fmt.Errorf("SMTP_URL: tls must be starttls, tls or none")
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return smtpMailer{}, fmt.Errorf("SMTP_URL: bad port %q", p)
		}
	}
	opts = append(opts, mail.WithPort(port), mail.WithTimeout(30*time.Second))
	if u.User != nil {
		pw, _ := u.User.Password()
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(u.User.Username()), mail.WithPassword(pw))
	}
	c, err := mail.NewClient(u.Hostname(), opts...)
	if err != nil {
		return smtpMailer{}, fmt.Errorf("SMTP_URL: %w", err)
	}
	return smtpMailer{client: c}, nil
}

// newMailer returns the mailer of cfg: through SMTP with an SMTPURL, else
// into the outbox folder OutboxDir (DATA/outbox when empty).
func newMailer(cfg Config) (mailer, error) {
	if cfg.SMTPURL != "" {
		m, err := newSMTP(cfg.SMTPURL)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	dir := cfg.OutboxDir
	if dir == "" {
		dir = filepath.Join(cfg.Store.Dir(), "outbox")
	}
	return outbox{dir: dir}, nil
}

// handleMail composes and delivers one mail.
func (s *Server) handleMail(ctx context.Context, task *asynq.Task) error {
	var p MailPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		return fmt.Errorf("mail: bad payload: %v: %w", err, asynq.SkipRetry)
	}
	m, err := s.composeMail(ctx, p)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("mail: %v: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	err = s.mailer.deliver(ctx, m)
	if p.Kind == MailAccessCode {
		// The practice sees what became of the code's mail (GET
		// …/access-code); the reason is the mailer's, never the code.
		failure := ""
		if err != nil {
			failure = err.Error()
		}
		if rerr := s.recordDelivery(ctx, p, failure); rerr != nil {
			s.log.Warn("recording a code mail's delivery failed", "tenant", p.Tenant, "account", p.Account, "err", rerr)
		}
	}
	if err != nil {
		s.log.Error("mail delivery failed", "tenant", p.Tenant, "account", p.Account, "kind", p.Kind, "err", err)
		return fmt.Errorf("mail: %w", err)
	}
	s.log.Info("mail sent", "tenant", p.Tenant, "account", p.Account, "kind", p.Kind)
	return nil
}

// recordDelivery records in p's tenant the outcome of delivering p's code
// mail (failure empty: delivered).
func (s *Server) recordDelivery(ctx context.Context, p MailPayload, failure string) error {
	t, err := s.cfg.Store.Tenant(ctx, p.Tenant)
	if err != nil {
		return err
	}
	return t.RecordCodeDelivery(ctx, p.Account, p.Expires, s.cfg.Now(), failure)
}

// composeMail looks up p's account and practice and composes the mail of
// p's kind to the account.
func (s *Server) composeMail(ctx context.Context, p MailPayload) (*mail.Msg, error) {
	t, err := s.cfg.Store.Tenant(ctx, p.Tenant)
	if err != nil {
		return nil, err
	}
	st, err := t.Settings(ctx)
	if err != nil {
		return nil, err
	}
	acc, err := t.Account(ctx, p.Account)
	if err != nil {
		return nil, err
	}
	m := mail.NewMsg()
	if err := m.From(s.cfg.MailFrom); err != nil {
		return nil, fmt.Errorf("mail: MAIL_FROM: %w: %w", err, asynq.SkipRetry)
	}
	if err := m.AddToFormat(acc.Name, acc.Email); err != nil {
		return nil, fmt.Errorf("mail: the account's email: %w: %w", err, asynq.SkipRetry)
	}
	subject, body, err := s.mailText(p, acc, st)
	if err != nil {
		return nil, err
	}
	m.Subject(subject)
	m.SetBodyString(mail.TypeTextPlain, body)
	m.SetDate()
	m.SetMessageID()
	return m, nil
}

// mailText returns the subject and plain-text body of p's kind of mail to
// acc, its times in the practice's time zone.
func (s *Server) mailText(p MailPayload, acc store.Account, st store.Settings) (subject, body string, err error) {
	loc := st.Location()
	switch p.Kind {
	case MailAccessCode:
		code, err := s.mailBox.Open(p.Code)
		if err != nil {
			return "", "", fmt.Errorf("mail: %w: %w", err, asynq.SkipRetry)
		}
		subject, body = accessCodeText(acc, st, code, p.Expires.In(loc))
		return subject, body, nil
	case MailNewDevice:
		subject, body = newDeviceText(acc, st, p.Device, p.At.In(loc))
		return subject, body, nil
	default:
		return "", "", fmt.Errorf("mail: unknown kind %q: %w", p.Kind, asynq.SkipRetry)
	}
}

// accessCodeText returns the subject and body of the mail that gives acc
// its access code, valid until exp.
func accessCodeText(acc store.Account, st store.Settings, code []byte, exp time.Time) (subject, body string) {
	subject = "Ihr Zugangscode für die Therasync-App / Your Therasync access code"
	body = fmt.Sprintf(`Hallo %s,

Ihr Zugangscode für die Therasync-App lautet:

    %s

Er gilt bis %s Uhr am %s (%s) und kann nur einmal verwendet werden.
Wenn Sie keinen Code angefordert haben, wenden Sie sich bitte an Ihre Praxis.

English: your Therasync access code is %s. It is valid until %s on %s (%s) and can be used once.

%s
`, acc.Name, code, exp.Format("15:04"), exp.Format("02.01.2006"), st.TZ, code, exp.Format("15:04"), exp.Format("2006-01-02"), st.TZ, st.Name)
	return subject, body
}

// newDeviceText returns the subject and body of the mail that tells acc
// of its sign-in on device at the time at.
func newDeviceText(acc store.Account, st store.Settings, device string, at time.Time) (subject, body string) {
	subject = "Neue Anmeldung in der Therasync-App / New sign-in to the Therasync app"
	body = fmt.Sprintf(`Hallo %s,

Ihr Konto wurde am %s um %s Uhr (%s) auf dem Gerät „%s“ in der Therasync-App angemeldet.
Wenn Sie das nicht waren, informieren Sie bitte sofort Ihre Praxis: sie kann das Gerät sperren.

English: your account signed in to the Therasync app on the device "%s" on %s at %s (%s). If this was not you, tell your practice at once.

%s
`, acc.Name, at.Format("02.01.2006"), at.Format("15:04"), st.TZ, device, device, at.Format("2006-01-02"), at.Format("15:04"), st.TZ, st.Name)
	return subject, body
}
