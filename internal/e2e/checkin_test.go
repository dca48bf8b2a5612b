package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// newBrowser starts headless Chromium (Debian's package, which
// ./scripts/test installs) with an empty profile, and returns a tab's
// context. There is no skipping: without Chromium the test fails.
func newBrowser(tb testing.TB) context.Context {
	tb.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		tb.Fatalf("chromium not found (./scripts/test installs Debian's chromium package): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 1000),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser steps with a deadline, failing the test with the step
// that failed and the page's text.
func run(tb testing.TB, ctx context.Context, step string, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		page, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
		tb.Fatalf("%s: %v\npage text:\n%s", step, err, page)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](tb testing.TB, ctx context.Context, expr string) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript expression until it is true.
func waitFor(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(25*time.Second))
}

// sign draws a zigzag on the open signature pad with the mouse, the way a
// finger would.
func sign() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		r, err := chromedp.Evaluate[struct{ X, Y, W, H float64 }](`(() => { const b = document.getElementById('pad').getBoundingClientRect(); return {X: b.left, Y: b.top, W: b.width, H: b.height}; })()`)(ctx, t)
		if err != nil {
			return err
		}
		pressed := func(p *input.DispatchMouseEventParams) { p.Buttons = 1 }
		x, y := r.X+r.W*0.1, r.Y+r.H*0.5
		steps := []chromedp.Action[chromedp.Void]{chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x, y, chromedp.ButtonLeft, pressed, chromedp.ClickCount(1))}
		for i := 1; i <= 16; i++ {
			x = r.X + r.W*(0.1+0.05*float64(i))
			y = r.Y + r.H*(0.3+0.4*float64(i%2))
			steps = append(steps, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x, y, chromedp.ButtonLeft, pressed))
		}
		steps = append(steps, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x, y, chromedp.ButtonLeft, chromedp.ClickCount(1)))
		_, err = chromedp.Steps(steps...)(ctx, t)
		return err
	})
}

// tap clicks the element that sel finds, the way a finger would. The page
// may rebuild its list between finding the node and clicking it (a live
// change arrived): then it finds the node again.
func tap(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		var err error
		for range 5 {
			if _, err = chromedp.Click(chromedp.CSS(sel))(ctx, t); err == nil || !strings.Contains(err.Error(), "node") {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return err
	})
}

// checkInOn taps a participant of a course, signs and confirms.
func checkInOn(course, profile string) []chromedp.Action[chromedp.Void] {
	return []chromedp.Action[chromedp.Void]{
		tap(fmt.Sprintf(`.course[data-course=%q] .person[data-profile=%q]`, course, profile)),
		chromedp.WaitVisible(chromedp.ID("pad")),
		sign(),
		waitFor(`!document.getElementById('sign-ok').disabled`),
		chromedp.Click(chromedp.ID("sign-ok")),
	}
}

// springerOn checks a Springer in: search by name, pick, sign, confirm.
func springerOn(course, search, profile string) []chromedp.Action[chromedp.Void] {
	return []chromedp.Action[chromedp.Void]{
		tap(fmt.Sprintf(`.course[data-course=%q] .springer-button`, course)),
		chromedp.SendKeys(chromedp.ID("springer-search"), search),
		tap(fmt.Sprintf(`#springer-results button[data-profile=%q]`, profile)),
		chromedp.WaitVisible(chromedp.ID("pad")),
		sign(),
		waitFor(`!document.getElementById('sign-ok').disabled`),
		chromedp.Click(chromedp.ID("sign-ok")),
	}
}

// screenshot saves the page as a test artifact under $TEST_ARTIFACTS
// (default: artifacts/ at the repository's root).
func screenshot(tb testing.TB, ctx context.Context, name string) {
	tb.Helper()
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	tb.Logf("screenshot: %s", abs)
}

// TestCheckinPage drives the check-in page in headless Chromium against
// syncd, the worker and Redis: log in with a mailed code, check in a
// regular with a drawn signature and a Springer, see a duplicate and a full
// course refused, see a practice push appear live, queue check-ins while
// the server is away (through a reload of the page), see them delivered,
// and see revocation; the practice then pulls the attendances with their
// PNG signatures and the raised units_used.
func TestCheckinPage(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	srv := sys.restartable()
	berlin := mustLoad(t, "Europe/Berlin")
	now := time.Now().In(berlin)
	today := now.Format(time.DateOnly)
	weekday := (int(now.Weekday())+6)%7 + 1
	name := func(first, last string) map[string]any {
		return map[string]any{"owner_id": "s1", "first_name": first, "last_name": last}
	}
	member := func(course, profile string, used int) map[string]any {
		return map[string]any{"course_id": course, "profile_id": profile, "units_total": 10, "units_used": used}
	}
	sys.push(
		up("accounts", "s1", map[string]any{"name": "Sabine", "email": "empfang@praxis.de", "role": "secretary", "app_enabled": true}),
		up("profiles", "p1", name("Anna", "Aktiv")),
		up("profiles", "p2", name("Bernd", "Berg")),
		up("profiles", "p3", name("Clara", "Colditz")),
		up("profiles", "p4", name("Dora", "Dorn")),
		up("profiles", "p5", name("Emil", "Engel")),
		up("profiles", "p6", name("Frieda", "Fuchs")),
		up("courses", "c-today", map[string]any{"practice_id": "pr1", "therapist_id": "m1", "title": "Rehasport Rücken", "weekday": weekday,
			"start_time": now.Add(-10 * time.Minute).Format("15:04"), "duration_min": 60, "capacity": 5}),
		up("courses", "c-other", map[string]any{"practice_id": "pr1", "therapist_id": "m1", "title": "Herzsport", "weekday": weekday%7 + 1,
			"start_time": "17:00", "duration_min": 45, "capacity": 10}),
		up("course_members", "cm1", member("c-today", "p1", 2)),
		up("course_members", "cm2", member("c-today", "p2", 0)),
		up("course_members", "cm6", member("c-today", "p6", 0)),
		up("course_members", "cm3", member("c-other", "p3", 0)),
		up("course_members", "cm4", member("c-other", "p4", 0)),
		up("course_members", "cm5", member("c-other", "p5", 0)),
		up("profiles", "p8", name("Gustav", "Gast")),
		up("course_members", "cm8", member("c-other", "p8", 10)),
		up("profiles", "p9", name("Hanna", "Hohl")),
		up("course_members", "cm9", member("c-today", "p9", 10)),
	)
	sys.waitShard("s1", sys.seq(), 10*time.Second)
	code := sys.sendCode("s1")

	ctx := newBrowser(t)
	today1 := `.course[data-course="c-today"]`
	run(t, ctx, "log in",
		chromedp.Navigate(sys.url+"/checkin/"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "empfang@praxis.de"),
		chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.SendKeys(chromedp.ID("pin"), "4711"),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person[data-profile="p1"]`)),
		waitFor(`document.body.dataset.state === 'online'`),
	)
	listed := eval[string](t, ctx, `document.getElementById('courses').innerText`)
	for _, want := range []string{"Rehasport Rücken", "Anna Aktiv", "Bernd Berg", "Frieda Fuchs", "Läuft", "4/5 Plätze", "10 von 10 Einheiten"} {
		if !strings.Contains(listed, want) {
			t.Errorf("the day's list lacks %q:\n%s", want, listed)
		}
	}
	if strings.Contains(listed, "Herzsport") {
		t.Errorf("the day's list shows another weekday's course:\n%s", listed)
	}

	run(t, ctx, "a check-in without a signature is impossible",
		tap(today1+` .person[data-profile="p1"]`),
		chromedp.WaitVisible(chromedp.ID("pad")),
		waitFor(`document.getElementById('sign-ok').disabled`),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('sign-ok').click()`),
		waitFor(`document.getElementById('sign-dialog').open && JSON.parse(localStorage.getItem('therasync.checkin.queue') || '[]').length === 0`),
		sign(),
		tap("#sign-clear"),
		waitFor(`document.getElementById('sign-ok').disabled`),
		tap("#sign-cancel"),
		waitFor(`!document.getElementById('sign-dialog').open`),
	)
	run(t, ctx, "a regular with no units left is told to get a new prescription",
		tap(today1+` .person[data-profile="p9"]`),
		waitFor(`document.getElementById('toast').textContent.includes('neue Verordnung')`),
	)
	if eval[bool](t, ctx, `document.getElementById('sign-dialog').open`) {
		t.Errorf("the signature pad opened for a regular with no units left")
	}
	run(t, ctx, "check in a regular", append(checkInOn("c-today", "p1"),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person.done[data-profile="p1"]`)))...)
	// The server decides for a Springer, whose own membership the page
	// does not show: Gustav's has no units left.
	run(t, ctx, "a Springer with no units left is refused with the message", append(springerOn("c-today", "Gast", "p8"),
		waitFor(`document.getElementById('refused-list').textContent.includes('Gustav Gast hat keine Einheiten mehr übrig') && document.getElementById('refused-list').textContent.includes('neue Verordnung')`))...)
	run(t, ctx, "check in a Springer", append(springerOn("c-today", "Coldi", "p3"),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person.springer.done[data-profile="p3"]`)))...)
	run(t, ctx, "the same participant again",
		tap(today1+` .person[data-profile="p1"]`),
		waitFor(`document.getElementById('toast').textContent.includes('bereits eingecheckt')`),
	)
	if eval[bool](t, ctx, `document.getElementById('sign-dialog').open`) {
		t.Errorf("the signature pad opened for a participant already checked in")
	}
	// The course holds 5: four regulars and Clara; a second Springer is refused by the server.
	run(t, ctx, "a Springer past capacity", append(springerOn("c-today", "Dorn", "p4"),
		waitFor(`document.getElementById('refused-list').textContent.includes('Der Kurs ist voll')`))...)

	// A practice PC adds a participant: the open page shows them.
	sys.push(up("course_members", "cm7", member("c-today", "p5", 0)))
	run(t, ctx, "a practice push appears live",
		chromedp.WaitVisible(chromedp.CSS(today1+` .person[data-profile="p5"]`)))
	// The practice moves the course: the page shows the new time.
	moved := now.Add(-5 * time.Minute).Format("15:04")
	sys.push(up("courses", "c-today", map[string]any{"start_time": moved}))
	run(t, ctx, "a moved course appears live",
		waitFor(fmt.Sprintf(`document.querySelector('.course[data-course="c-today"]').innerText.includes(%q)`, moved+"–")))
	screenshot(t, ctx, "checkin.png")

	// Offline: the server goes away; two check-ins wait, through a reload.
	run(t, ctx, "the page's files are cached", waitFor(`navigator.serviceWorker.controller !== null`))
	srv.down()
	run(t, ctx, "offline", waitFor(`document.body.dataset.state === 'offline'`))
	run(t, ctx, "check in while offline", append(append(checkInOn("c-today", "p6"), checkInOn("c-today", "p2")...),
		waitFor(`document.getElementById('pending-count').textContent === '2 Check-ins'`))...)
	run(t, ctx, "reload while offline",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person.waiting[data-profile="p6"]`)),
		waitFor(`document.getElementById('pending-count').textContent === '2 Check-ins' && !document.getElementById('pending').hidden`),
	)
	// Meanwhile another terminal checked Bernd in: the queued one is refused.
	secretary := model.Viewer{ID: "s1", Role: model.RoleSecretary}
	other := []model.Change{{Entity: model.Attendances, Op: model.OpUpsert, ID: uid("other-terminal"),
		Fields: map[string]any{"course_id": "c-today", "profile_id": "p2", "date": today, "signature": tinyPNG}}}
	tok, _, err := sys.tenant.LoginDevice(context.Background(), "s1", "tablet-2", "Tablet 2", "test")
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(tok, ".")
	hash := sha256.Sum256([]byte(secret))
	if _, err := sys.tenant.Apply(context.Background(), store.Batch{Origin: "device:tablet-2", Writer: &secretary, DeviceID: "tablet-2",
		MutationIDs: []string{"m-other"}, Changes: other, TokenHash: hash[:]}); err != nil {
		t.Fatal(err)
	}
	srv.up()
	run(t, ctx, "the queue drains when the server is back",
		waitFor(`document.body.dataset.state === 'online' && document.getElementById('pending').hidden`),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person.done[data-profile="p6"]`)),
		waitFor(`document.getElementById('refused-list').textContent.includes('Bernd Berg ist für diesen Kurs heute bereits eingecheckt')`),
	)

	// What the practice pulls.
	_, b := sys.do("GET", "/v1/practice/changes?since=0", nil)
	var pulled struct{ Changes []model.Change }
	if err := json.Unmarshal(b, &pulled); err != nil {
		t.Fatal(err)
	}
	atts := map[string]map[string]any{}
	units := map[string]any{}
	for _, c := range pulled.Changes {
		switch c.Entity {
		case model.Attendances:
			p, _ := c.Fields["profile_id"].(string)
			if atts[p] != nil {
				t.Errorf("two attendances of %s: %v and %v", p, atts[p], c.Fields)
			}
			atts[p] = c.Fields
		case model.CourseMembers:
			if v, ok := c.Fields["units_used"]; ok {
				units[c.ID] = v
			}
		}
	}
	for p, want := range map[string]bool{"p1": false, "p3": true, "p6": false} {
		a := atts[p]
		if a == nil || a["course_id"] != "c-today" || a["date"] != today || a["springer"] != want || a["device_id"] == "" {
			t.Errorf("attendance of %s = %v; want c-today on %s, springer %v, with the device", p, a, today, want)
			continue
		}
		img, err := decodeSignature(a["signature"])
		if err != nil {
			t.Errorf("signature of %s: %v", p, err)
			continue
		}
		if ink := inked(img); ink < 100 {
			t.Errorf("signature of %s has %d dark pixels; want a drawn line", p, ink)
		}
	}
	if atts["p8"] != nil || atts["p9"] != nil {
		t.Errorf("a check-in without units left was recorded: %v, %v", atts["p8"], atts["p9"])
	}
	if atts["p4"] != nil {
		t.Errorf("the Springer past capacity was recorded: %v", atts["p4"])
	}
	if atts["p2"]["device_id"] != "tablet-2" {
		t.Errorf("Bernd's attendance = %v; want only the other terminal's", atts["p2"])
	}
	// JSON numbers: units_used of the memberships that the check-ins used.
	for id, want := range map[string]float64{"cm1": 3, "cm3": 1, "cm6": 1, "cm2": 1, "cm4": 0, "cm8": 10, "cm9": 10} {
		if got, _ := units[id].(float64); got != want {
			t.Errorf("units_used of %s = %v; want %v", id, units[id], want)
		}
	}

	// Revocation: the page says so and keeps the day readable.
	deviceID := eval[string](t, ctx, `JSON.parse(localStorage.getItem('therasync.checkin.device_id'))`)
	if code, b := sys.do("POST", "/v1/practice/devices/"+deviceID+"/revoke", map[string]any{}); code != 200 {
		t.Fatalf("revoke = %d %s", code, b)
	}
	run(t, ctx, "revoked",
		waitFor(`document.body.dataset.state === 'revoked'`),
		chromedp.WaitVisible(chromedp.ID("revoked")),
		chromedp.WaitVisible(chromedp.CSS(today1+` .person.done[data-profile="p1"]`)),
		waitFor(`[...document.querySelectorAll('.person')].every((b) => b.disabled)`),
	)
	screenshot(t, ctx, "checkin-revoked.png")
}

// decodeSignature decodes an attendance's signature: base64 of a PNG.
func decodeSignature(v any) (image.Image, error) {
	s, _ := v.(string)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("base64: %w", err)
	}
	return png.Decode(bytes.NewReader(raw))
}

// inked counts the dark, opaque pixels of img.
func inked(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			if a > 0x8000 && r < 0x4000 && g < 0x4000 && bl < 0x4000 {
				n++
			}
		}
	}
	return n
}

// historySpy stands between the check-in page and syncd: it records the
// history of each day the page reads (GET /v1/device/checkin) and the
// query of each live connection the page opens.
type historySpy struct {
	mu          sync.Mutex
	histories   []string
	syncQueries []url.Values
}

func (s *historySpy) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/device/sync":
			s.mu.Lock()
			s.syncQueries = append(s.syncQueries, r.URL.Query())
			s.mu.Unlock()
		case "/v1/device/checkin":
			r.Header.Del("Accept-Encoding")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			var v map[string]any
			if rec.Code == http.StatusOK && json.Unmarshal(body, &v) == nil {
				h, _ := v["history"].(string) // syncd's; none fails sentHistory
				s.mu.Lock()
				s.histories = append(s.histories, h)
				s.mu.Unlock()
				body, _ = json.Marshal(v)
			}
			for k, vs := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = vs
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sentHistory reports whether a live connection carried the history of a
// day the page read.
func (s *historySpy) sentHistory() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.syncQueries {
		if q.Get("cursor") != "" && q.Get("history") != "" && slices.Contains(s.histories, q.Get("history")) {
			return true
		}
	}
	return false
}

// TestCheckinLogoutOffline: the page connects from the day's seq and its
// history; logging out while the server is down deletes everything the
// page kept in localStorage and the service worker's cache at once,
// keeping only the token as a pending logout; when the page is loaded
// again with the server back, it tells the server, which refuses the token
// from then on and shows the device logged out.
func TestCheckinLogoutOffline(t *testing.T) {
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	spy := &historySpy{}
	srv := sys.restartable(spy.wrap)
	now := time.Now().In(mustLoad(t, "Europe/Berlin"))
	sys.push(
		up("accounts", "s1", map[string]any{"name": "Sabine", "email": "empfang@praxis.de", "role": "secretary", "app_enabled": true}),
		up("profiles", "p1", map[string]any{"owner_id": "s1", "first_name": "Anna", "last_name": "Aktiv"}),
		up("courses", "c1", map[string]any{"practice_id": "pr1", "therapist_id": "m1", "title": "Rehasport", "weekday": (int(now.Weekday())+6)%7 + 1,
			"start_time": "08:00", "duration_min": 60, "capacity": 10}),
		up("course_members", "cm1", map[string]any{"course_id": "c1", "profile_id": "p1", "units_total": 10, "units_used": 0}),
	)
	sys.waitShard("s1", sys.seq(), 10*time.Second)
	code := sys.sendCode("s1")

	ctx := newBrowser(t)
	run(t, ctx, "log in",
		chromedp.Navigate(sys.url+"/checkin/"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "empfang@praxis.de"),
		chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.SendKeys(chromedp.ID("pin"), "4711"),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.CSS(`.course[data-course="c1"] .person[data-profile="p1"]`)),
		waitFor(`document.body.dataset.state === 'online'`),
		waitFor(`navigator.serviceWorker.controller !== null`),
		waitFor(`(caches.keys().then((k) => { window.cachesKept = k.length; }), window.cachesKept > 0)`),
	)
	if !spy.sentHistory() {
		t.Errorf("the page connected with %v; want the history of the day it read (%v)", spy.syncQueries, spy.histories)
	}
	token := eval[string](t, ctx, `JSON.parse(localStorage.getItem('therasync.checkin.auth')).token`)
	deviceID := eval[string](t, ctx, `JSON.parse(localStorage.getItem('therasync.checkin.device_id'))`)

	srv.down()
	run(t, ctx, "offline", waitFor(`document.body.dataset.state === 'offline'`))
	if kept := eval[string](t, ctx, `localStorage.getItem('therasync.checkin.pin')`); strings.Contains(kept, "4711") || !strings.Contains(kept, `"hash":`) {
		t.Errorf("the kept PIN = %s; want only its hash", kept)
	}
	run(t, ctx, "a wrong PIN does not log out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("pin-check")),
		chromedp.SendKeys(chromedp.ID("pin-check"), "1234"),
		chromedp.Click(chromedp.ID("pin-ok")),
		waitFor(`document.getElementById('pin-error').textContent.includes('PIN stimmt nicht')`),
	)
	if eval[bool](t, ctx, `document.getElementById('pin-dialog').open && JSON.parse(localStorage.getItem('therasync.checkin.auth')) !== null`) != true {
		t.Errorf("a wrong PIN closed the dialog or logged the tablet out")
	}
	run(t, ctx, "cancel keeps the tablet logged in",
		chromedp.Click(chromedp.ID("pin-cancel")),
		waitFor(`!document.getElementById('pin-dialog').open && document.getElementById('login').hidden`),
	)
	run(t, ctx, "log out while offline with the right PIN",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("pin-check")),
		chromedp.SendKeys(chromedp.ID("pin-check"), "4711"),
		chromedp.Click(chromedp.ID("pin-ok")),
		chromedp.WaitVisible(chromedp.ID("email")),
		waitFor(`(caches.keys().then((k) => { window.cachesKept = k.length; }), window.cachesKept === 0)`),
	)
	if kept := eval[string](t, ctx, `JSON.stringify(Object.keys(localStorage))`); kept != `["therasync.checkin.logout_pending"]` {
		t.Errorf("localStorage after an offline logout holds %s; want only the pending logout", kept)
	}
	if pending := eval[[]string](t, ctx, `JSON.parse(localStorage.getItem('therasync.checkin.logout_pending'))`); !slices.Equal(pending, []string{token}) {
		t.Errorf("pending logout = %q; want the token", pending)
	}

	srv.up()
	if resp, b := sys.req("GET", "/v1/device/checkin", token, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the token before the page told the server: %d %s; want it still valid (the server was down)", resp.StatusCode, b)
	}
	run(t, ctx, "the page loads again and tells the server",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.ID("email")),
		waitFor(`localStorage.length === 0`),
	)
	if resp, b := sys.req("GET", "/v1/device/checkin", token, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the token after the pending logout = %d %s; want 401", resp.StatusCode, b)
	}
	ds, err := sys.tenant.Devices(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].ID != deviceID || ds[0].State != "logged_out" {
		t.Errorf("the account's devices = %+v; want %s logged out", ds, deviceID)
	}
}

// tinyPNG is a 1×1 PNG, base64: a valid signature for a check-in that no
// pad drew.
const tinyPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
