package e2e_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/therasync/therasync/device"
)

// The erased patient's values, each unique in the system: after the
// erasure no file, no Redis key and no log line may hold one.
var erasedValues = []string{
	"Zyxwvuts-Erasure-Name", "Qwertzui-Erasure-Last", "Erasure-Allee 17", "Erasure-Kasse-4711", "0170-99887766",
	"Zyxwvuts-Erasure-Protocol", "Erasure-Second-Protocol", "Erasure-Signature-PNG",
}

// TestErasureEndToEnd: a practice erases a patient with sessions (with
// protocols), a share, a course membership, a check-in and transactions
// while a member device that sees it follows live and another is offline.
// The live one receives the deletes and the new history (no new shard);
// the offline one gets resync and a fresh shard; both end without the
// patient. Then no byte of the tenant's files (central database, WAL,
// every shard file), of a backup made after, of the devices' files, of
// Redis or of the logs holds a value of the patient.
func TestErasureEndToEnd(t *testing.T) {
	ctx := context.Background()
	sys := newSystem(t)
	sys.startWorker(time.Hour)
	sys.push(
		up("accounts", "m1", map[string]any{"name": "Jonas", "email": "j@x.de", "role": "member", "app_enabled": true}),
		up("accounts", "m2", map[string]any{"name": "Lena", "email": "l@x.de", "role": "member", "app_enabled": true}),
		up("accounts", "s1", map[string]any{"name": "Sabine", "email": "s@x.de", "role": "secretary", "app_enabled": false}),
		up("profiles", "p-zyx", map[string]any{"owner_id": "m1", "first_name": "Zyxwvuts-Erasure-Name", "last_name": "Qwertzui-Erasure-Last",
			"birth_date": "1961-04-01", "phone": "0170-99887766", "address": "Erasure-Allee 17", "insurance": "Erasure-Kasse-4711"}),
		up("profiles", "p-keep", map[string]any{"owner_id": "m1", "first_name": "Keep-Me-Patient"}),
		up("profile_shares", "sh-zyx", map[string]any{"profile_id": "p-zyx", "account_id": "m2", "shared_by": "m1"}),
		up("sessions", "ses-z1", map[string]any{"profile_id": "p-zyx", "therapist_id": "m1", "status": "done", "price_cents": 3800,
			"starts_at": "2026-11-02T09:00:00+01:00", "protocol": strings.Repeat("Zyxwvuts-Erasure-Protocol ", 400)}),
		up("sessions", "ses-z2", map[string]any{"profile_id": "p-zyx", "therapist_id": "m2", "protocol": "Erasure-Second-Protocol"}),
		up("sessions", "ses-keep", map[string]any{"profile_id": "p-keep", "therapist_id": "m1", "protocol": "Keep-Me-Protocol"}),
		up("transactions", "tx-z", map[string]any{"account_id": "m1", "profile_id": "p-zyx", "session_id": "ses-z1", "kind": "invoice", "amount_cents": 3800, "status": "billed", "date": "2026-11-05"}),
		up("transactions", "tx-z-pay", map[string]any{"account_id": "m1", "session_id": "ses-z1", "kind": "payment", "amount_cents": 3800, "date": "2026-11-06"}),
		up("courses", "crs", map[string]any{"therapist_id": "m2", "title": "Rücken", "weekday": 1, "start_time": "10:00"}),
		up("course_members", "cm-z", map[string]any{"course_id": "crs", "profile_id": "p-zyx", "units_total": 10}),
		up("attendances", "at-z", map[string]any{"course_id": "crs", "profile_id": "p-zyx", "date": "2026-11-02", "signature": "Erasure-Signature-PNG"}),
	)
	seq := sys.seq()
	sys.waitShard("m1", seq, 5*time.Second)
	sys.waitShard("m2", seq, 5*time.Second)
	live := newDevice(t, sys, "j@x.de", "m1")
	offline := newDevice(t, sys, "l@x.de", "m2")
	if err := syncIdle(t, offline); err != nil {
		t.Fatalf("first sync of the offline device = %v", err)
	}
	for _, c := range []*device.Client{live, offline} {
		if n := countRows(t, c, `SELECT count(*) FROM sessions WHERE profile_id = 'p-zyx'`); n != 2 {
			t.Fatalf("a device holds %d of the patient's sessions before the erasure; want 2", n)
		}
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	following := make(chan error, 1)
	go func() { following <- live.Sync(followCtx, device.SyncOptions{MaxBackoff: 200 * time.Millisecond}) }()
	var stopped sync.Once
	stop := func() { stopped.Do(func() { stopFollowing(); <-following }) }
	defer stop()
	// Live: a change after it connected reaches it.
	sys.push(up("sessions", "ses-keep", map[string]any{"status": "done"}))
	waitFollowing(t, live, sys.seq(), "")
	before, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	liveDownloads, offlineDownloads := downloads(t, sys, live), downloads(t, sys, offline)

	sys.push(map[string]any{"entity": "profiles", "op": "erase", "id": "p-zyx"})
	after, err := sys.tenant.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.History == before.History {
		t.Fatalf("the erasure kept the history %s", after.History)
	}

	// The live device: the deletes and the new history, streamed.
	waitFollowing(t, live, after.Seq, after.History)
	if n := downloads(t, sys, live); n != liveDownloads {
		t.Errorf("the live device downloaded %d shards during the erasure; want the stream alone", n-liveDownloads)
	}
	// The offline device: resync, and a shard of the new history.
	if err := syncIdle(t, offline); err != nil {
		t.Fatalf("sync of the offline device after the erasure = %v", err)
	}
	if h, _ := offline.History(); h != after.History || downloads(t, sys, offline) != offlineDownloads+1 {
		t.Errorf("the offline device follows history %s after %d downloads; want %s after a fresh shard", h, downloads(t, sys, offline)-offlineDownloads, after.History)
	}
	for name, c := range map[string]*device.Client{"live": live, "offline": offline} {
		for _, q := range []string{
			`SELECT count(*) FROM profiles WHERE id = 'p-zyx'`, `SELECT count(*) FROM sessions WHERE profile_id = 'p-zyx'`,
			`SELECT count(*) FROM profile_shares WHERE profile_id = 'p-zyx'`, `SELECT count(*) FROM transactions WHERE id IN ('tx-z', 'tx-z-pay')`,
			`SELECT count(*) FROM course_members WHERE profile_id = 'p-zyx'`, `SELECT count(*) FROM attendances WHERE profile_id = 'p-zyx'`,
		} {
			if n := countRows(t, c, q); n != 0 {
				t.Errorf("the %s device: %s = %d after the erasure; want 0", name, q, n)
			}
		}
	}
	if n := countRows(t, live, `SELECT count(*) FROM sessions WHERE id = 'ses-keep'`); n != 1 {
		t.Errorf("the live device lost the kept patient's session")
	}
	if code, b := sys.do("GET", "/v1/practice/changes?since=0&history="+before.History, nil); code != 409 || !strings.Contains(string(b), "history_changed") {
		t.Errorf("a practice pull of the old history = %d %s; want 409 history_changed", code, b)
	}
	stop()

	// No byte left: the tenant's files, every shard, a backup made after
	// (as the backup command makes it, and through the API), the devices'
	// files, Redis, the logs.
	sys.waitShard("m1", after.Seq, 5*time.Second)
	backup := filepath.Join(t.TempDir(), "central.db")
	if err := sys.tenant.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	code, apiBackup := sys.do("GET", "/v1/practice/backup?as=m1", nil)
	if code != 200 {
		t.Fatalf("backup as m1 = %d %s", code, apiBackup)
	}
	files := map[string][]byte{"backup via the API": apiBackup}
	var shards int
	for _, dir := range []string{filepath.Dir(sys.tenant.Path()), filepath.Join(sys.data, "shards", sys.tenant.ID()), filepath.Dir(backup), live.Dir(), offline.Dir()} {
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				b, _ := os.ReadFile(p)
				files[p] = b
				if strings.Contains(p, string(filepath.Separator)+"shards"+string(filepath.Separator)) {
					shards++
				}
			}
			return nil
		})
	}
	if shards < 2 || len(files) < 8 {
		t.Fatalf("searched %d files, %d of them shards: the search looks at too little", len(files), shards)
	}
	keys, _ := sys.rdb.Keys(ctx, "*").Result()
	var redisDump bytes.Buffer
	for _, k := range keys {
		v, _ := sys.rdb.Dump(ctx, k).Result()
		redisDump.WriteString(k + "\x00" + v + "\x00")
	}
	files["redis"], files["logs"] = redisDump.Bytes(), []byte(sys.logs.String())
	for _, v := range erasedValues {
		for name, b := range files {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %q after the erasure", name, v)
			}
		}
	}
	for _, f := range []string{sys.tenant.Path(), backup} {
		if !bytes.Contains(files[f], []byte("Keep-Me-Patient")) {
			t.Errorf("%s lacks the kept patient: the search reads nothing", f)
		}
	}
	audit, _ := sys.tenant.AuditLog(ctx, 0, 1000)
	var erased int
	for _, e := range audit {
		if e.Action == "profile_erased" {
			erased++
		}
	}
	if erased != 1 {
		t.Errorf("the audit log has %d erasure lines; want 1", erased)
	}
}

// waitFollowing waits until the device's cursor reaches seq and, when
// history is set, it follows that history.
func waitFollowing(tb testing.TB, c *device.Client, seq int64, history string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := c.Cursor()
		h, _ := c.History()
		if cur >= seq && (history == "" || h == history) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the device is at cursor %d of history %s; want %d of %q", cur, h, seq, history)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countRows returns the count a query on the device's local data answers.
func countRows(tb testing.TB, c *device.Client, q string) int64 {
	tb.Helper()
	n, _ := queryOne(tb, c, q).(int64)
	return n
}

// downloads counts the shard downloads of the device in the audit log.
func downloads(tb testing.TB, sys *system, c *device.Client) int {
	tb.Helper()
	entries, err := sys.tenant.AuditLog(context.Background(), 0, 10000)
	if err != nil {
		tb.Fatal(err)
	}
	var n int
	for _, e := range entries {
		if e.Action == "shard_download" && e.DeviceID == c.State().DeviceID {
			n++
		}
	}
	return n
}
