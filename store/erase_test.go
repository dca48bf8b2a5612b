package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/store"
)

// The distinctive values of the erased patient: none of them may be left
// in any byte of the tenant's files after the erasure.
var erasedValues = []string{
	"Zyxwvuts-Erasure-Name", "Qwertzui-Erasure-Last", "Erasure-Allee 17", "Erasure-Kasse-4711", "0170-99887766",
	"Erasure-Protocol-Text", "Erasure-Old-Phone", "Erasure-Deleted-Protocol", "Erasure-Moved-Protocol",
	"Erasure-Signature-PNG",
}

// keptValues belong to rows the erasure keeps: finding them shows the
// search reads the data.
var keptValues = []string{"Keep-Me-Patient", "Keep-Me-Protocol"}

// seedErasure writes a tenant with profile p-zyx (shares, sessions with a
// long protocol, a course membership, a check-in, transactions, a session
// deleted before and one moved to another profile since) and profile
// p-keep, part of it checkpointed into the database file, part in the WAL.
func seedErasure(tb testing.TB, tn *store.Tenant) {
	tb.Helper()
	long := strings.Repeat("Erasure-Protocol-Text ", 600) // overflow pages
	mustApply(tb, tn, "seed-1", `[
		{"entity":"accounts","op":"upsert","id":"m1","fields":{"name":"Jonas","role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m2","fields":{"name":"Lena","role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"s1","fields":{"name":"Sabine","role":"secretary","app_enabled":false}},
		{"entity":"profiles","op":"upsert","id":"p-zyx","fields":{"owner_id":"m1","first_name":"Zyxwvuts-Erasure-Name","last_name":"Qwertzui-Erasure-Last",
			"birth_date":"1961-04-01","phone":"Erasure-Old-Phone","address":"Erasure-Allee 17","insurance":"Erasure-Kasse-4711"}},
		{"entity":"profiles","op":"upsert","id":"p-keep","fields":{"owner_id":"m1","first_name":"Keep-Me-Patient"}},
		{"entity":"profile_shares","op":"upsert","id":"sh-1","fields":{"profile_id":"p-zyx","account_id":"m2","shared_by":"m1"}},
		{"entity":"sessions","op":"upsert","id":"ses-1","fields":{"profile_id":"p-zyx","therapist_id":"m1","status":"done","price_cents":3800,"protocol":"`+long+`"}},
		{"entity":"sessions","op":"upsert","id":"ses-gone","fields":{"profile_id":"p-zyx","therapist_id":"m1","protocol":"Erasure-Deleted-Protocol"}},
		{"entity":"sessions","op":"upsert","id":"ses-moved","fields":{"profile_id":"p-zyx","therapist_id":"m1","protocol":"Erasure-Moved-Protocol"}},
		{"entity":"sessions","op":"upsert","id":"ses-keep","fields":{"profile_id":"p-keep","therapist_id":"m1","protocol":"Keep-Me-Protocol"}},
		{"entity":"courses","op":"upsert","id":"c-1","fields":{"therapist_id":"m2","title":"Rücken"}},
		{"entity":"course_members","op":"upsert","id":"cm-1","fields":{"course_id":"c-1","profile_id":"p-zyx","units_total":10}},
		{"entity":"attendances","op":"upsert","id":"at-1","fields":{"course_id":"c-1","profile_id":"p-zyx","date":"2026-11-02","signature":"Erasure-Signature-PNG"}},
		{"entity":"transactions","op":"upsert","id":"tx-1","fields":{"account_id":"m1","profile_id":"p-zyx","session_id":"ses-1","kind":"invoice","amount_cents":3800,"status":"billed","date":"2026-11-03"}},
		{"entity":"transactions","op":"upsert","id":"tx-2","fields":{"account_id":"m1","session_id":"ses-1","kind":"payment","amount_cents":3800,"date":"2026-11-04"}},
		{"entity":"transactions","op":"upsert","id":"tx-keep","fields":{"account_id":"m1","profile_id":"p-keep","kind":"invoice","amount_cents":100,"date":"2026-11-04"}}
	]`)
	checkpoint(tb, tn)
	mustApply(tb, tn, "seed-2", `[
		{"entity":"profiles","op":"upsert","id":"p-zyx","fields":{"phone":"0170-99887766"}},
		{"entity":"sessions","op":"delete","id":"ses-gone"},
		{"entity":"sessions","op":"upsert","id":"ses-moved","fields":{"profile_id":"p-keep","protocol":"moved to p-keep"}}
	]`)
}

// checkpoint copies the WAL into the database file, as SQLite does now and
// then, so that the erased values are in both.
func checkpoint(tb testing.TB, tn *store.Tenant) {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+tn.Path())
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
		tb.Fatal(err)
	}
}

// tenantBytes returns the bytes of the tenant's database files: the
// database, its WAL and its shared-memory index.
func tenantBytes(tb testing.TB, tn *store.Tenant) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(tn.Path() + suffix)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatal(err)
		}
		out[tn.Path()+suffix] = b
	}
	return out
}

// TestErasure: erasing a profile deletes it and every row naming it, with
// a delete logged for each; every past change of those rows becomes a
// field-less delete at its seq; a row that named it once is logged anew;
// the log gets a new history; every shard record is forgotten and every
// app-enabled account's build requested; no byte of the tenant's files
// holds an erased value; a repeated batch changes nothing.
func TestErasure(t *testing.T) {
	ctx := context.Background()
	_, tn, _ := newTenant(t, nil)
	seedErasure(t, tn)
	before, err := tn.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.RecordShard(ctx, store.Shard{AccountID: "m1", Seq: before.Seq, Path: "shards/x/a-m1/1.db", Role: "member", History: before.History, BuiltAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, v := range append(erasedValues, keptValues...) {
		if !anyHolds(tenantBytes(t, tn), v) {
			t.Fatalf("before the erasure no file holds %q: the test looks at nothing", v)
		}
	}
	old, _, err := tn.Changes(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}

	res := mustApply(t, tn, "erase-1", `[{"entity":"profiles","op":"erase","id":"p-zyx"}]`)

	gone := map[string][]string{
		model.Profiles: {"p-zyx"}, model.ProfileShares: {"sh-1"}, model.Sessions: {"ses-1", "ses-gone"},
		model.CourseMembers: {"cm-1"}, model.Attendances: {"at-1"}, model.Transactions: {"tx-1", "tx-2"},
	}
	wantLogged := "transactions/tx-2 transactions/tx-1 sessions/ses-1 profile_shares/sh-1 course_members/cm-1 attendances/at-1 profiles/p-zyx sessions/ses-moved"
	var logged []string
	for i, c := range res.Changes {
		logged = append(logged, c.Entity+"/"+c.ID)
		if c.Seq != before.Seq+int64(i)+1 {
			t.Errorf("erasure change %d at seq %d; want %d (new seqs after the log's head)", i, c.Seq, before.Seq+int64(i)+1)
		}
	}
	if got := strings.Join(logged, " "); got != wantLogged {
		t.Errorf("the erasure logged %s; want %s", got, wantLogged)
	}
	if last := res.Changes[len(res.Changes)-1]; last.Op != model.OpUpsert || last.Fields["profile_id"] != "p-keep" || last.Fields["protocol"] != "moved to p-keep" {
		t.Errorf("the session moved away is logged anew as %+v; want its whole row", last)
	}
	for entity, ids := range gone {
		have, _ := tn.RowIDs(ctx, entity)
		for _, id := range ids {
			if strings.Contains(" "+strings.Join(have, " ")+" ", " "+id+" ") {
				t.Errorf("%s/%s survived the erasure", entity, id)
			}
		}
	}
	for _, kept := range [][2]string{{model.Profiles, "p-keep"}, {model.Sessions, "ses-keep"}, {model.Sessions, "ses-moved"}, {model.Transactions, "tx-keep"}, {model.Courses, "c-1"}, {model.Accounts, "m1"}} {
		if _, err := tn.Row(ctx, kept[0], kept[1]); err != nil {
			t.Errorf("%s/%s = %v after the erasure; want it kept", kept[0], kept[1], err)
		}
	}

	// The log: the same seqs, the erased rows' and the moved row's past as
	// field-less deletes, everything else as it was.
	now, _, err := tn.Changes(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(now) != len(old)+len(res.Changes) {
		t.Fatalf("the log holds %d changes; want the %d before and the erasure's %d", len(now), len(old), len(res.Changes))
	}
	scrubbed := map[string]bool{"sessions/ses-moved": true}
	for e, ids := range gone {
		for _, id := range ids {
			scrubbed[e+"/"+id] = true
		}
	}
	for i, c := range old {
		n := now[i]
		if n.Seq != c.Seq || n.Entity != c.Entity || n.ID != c.ID {
			t.Errorf("change at seq %d became %d %s/%s; seqs, entities and row ids never move", c.Seq, n.Seq, n.Entity, n.ID)
		}
		switch {
		case scrubbed[c.Entity+"/"+c.ID] && (n.Op != model.OpDelete || n.Fields != nil):
			t.Errorf("seq %d of erased %s/%s = %s %v; want a field-less delete", c.Seq, c.Entity, c.ID, n.Op, n.Fields)
		case !scrubbed[c.Entity+"/"+c.ID] && (n.Op != c.Op || fmt.Sprint(n.Fields) != fmt.Sprint(c.Fields)):
			t.Errorf("seq %d of %s/%s changed from %s %v to %s %v", c.Seq, c.Entity, c.ID, c.Op, c.Fields, n.Op, n.Fields)
		}
	}

	after, _ := tn.Log(ctx)
	if after.History == before.History || res.History != after.History {
		t.Errorf("history %s → %s (result %s); want a new one, in the result", before.History, after.History, res.History)
	}
	if _, err := tn.LatestShard(ctx, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("m1's shard after the erasure = %v; want no shard (not_found)", err)
	}
	if got := strings.Join(res.BuildRequests, " "); got != "m1 m2" {
		t.Errorf("builds requested = %q; want every app-enabled account, m1 m2", got)
	}
	if due, _ := tn.DueBuilds(ctx); strings.Join(due, " ") != "m1 m2" {
		t.Errorf("due builds = %v; want m1 m2", due)
	}

	files := tenantBytes(t, tn)
	for _, v := range erasedValues {
		for f, b := range files {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %q after the erasure", f, v)
			}
		}
	}
	for _, v := range keptValues {
		if !anyHolds(files, v) {
			t.Errorf("no file holds %q, a value of a kept row", v)
		}
	}
	if n := len(files[tn.Path()+"-wal"]); n != 0 {
		t.Errorf("the WAL holds %d bytes after the erasure; want it truncated", n)
	}
	audit, _ := tn.AuditLog(ctx, 0, 100)
	if len(audit) == 0 || audit[len(audit)-1].Action != "profile_erased" || !strings.Contains(audit[len(audit)-1].Detail, "p-zyx") {
		t.Errorf("audit = %+v; want the erasure's line last", audit)
	}

	// The same batch again: its first result, nothing applied. The same
	// erasure in another batch: nothing left to erase, nothing logged.
	again := mustApply(t, tn, "erase-1", `[{"entity":"profiles","op":"erase","id":"p-zyx"}]`)
	if !again.Repeated || again.Seq != res.Seq {
		t.Errorf("repeated erasure batch = %+v; want the first seq %d, repeated", again, res.Seq)
	}
	if _, err := apply(t, tn, "erase-1", `[{"entity":"profiles","op":"erase","id":"p-keep"}]`); !errors.Is(err, store.ErrConflict) {
		t.Errorf("batch erase-1 with another erasure = %v; want conflict", err)
	}
	second := mustApply(t, tn, "erase-2", `[{"entity":"profiles","op":"erase","id":"p-zyx"}]`)
	if last, _ := tn.Log(ctx); len(second.Changes) != 0 || second.History != "" || last.History != after.History || last.Seq != after.Seq {
		t.Errorf("erasing the erased again = %+v, log %+v; want nothing logged, the history kept", second, last)
	}
}

func anyHolds(files map[string][]byte, v string) bool {
	for _, b := range files {
		if bytes.Contains(b, []byte(v)) {
			return true
		}
	}
	return false
}

// TestDeviceErasureRefused: no device erases, an admin's neither: the
// mutation is refused as forbidden and changes nothing.
func TestDeviceErasureRefused(t *testing.T) {
	ctx := context.Background()
	_, tn, _ := newTenant(t, nil)
	mustApply(t, tn, "seed", `[
		{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p1","fields":{"owner_id":"a1","first_name":"Anna"}}
	]`)
	before, _ := tn.Log(ctx)
	res := devicePush(t, tn, model.Viewer{ID: "a1", Role: model.RoleAdmin}, "tablet", []string{"e1"}, `[{"entity":"profiles","op":"erase","id":"p1"}]`)
	if !errors.Is(res.Refused[0], model.ErrForbidden) || len(res.Changes) != 0 {
		t.Errorf("an admin device's erasure = refused %v, logged %v; want forbidden, nothing", res.Refused, res.Changes)
	}
	after, _ := tn.Log(ctx)
	if row, err := tn.Row(ctx, model.Profiles, "p1"); err != nil || row["first_name"] != "Anna" || after != before {
		t.Errorf("after a refused erasure: p1 = %v, %v; log %+v → %+v; want nothing changed", row, err, before, after)
	}
}

// TestErasureWALWaitsForReaders: a reader still on a snapshot from before
// the erasure keeps the WAL from being truncated at once; the writer
// truncates it soon after the reader is done, without another write.
func TestErasureWALWaitsForReaders(t *testing.T) {
	ctx := context.Background()
	_, tn, _ := newTenant(t, nil)
	seedErasure(t, tn)
	db, err := sql.Open("sqlite", "file:"+tn.Path()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rtx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rtx.QueryRow(`SELECT count(*) FROM changes`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	mustApply(t, tn, "erase", `[{"entity":"profiles","op":"erase","id":"p-zyx"}]`)
	if size := len(tenantBytes(t, tn)[tn.Path()+"-wal"]); size == 0 {
		t.Fatalf("the WAL was truncated under a reader's snapshot")
	}
	rtx.Rollback()
	deadline := time.Now().Add(5 * time.Second)
	for len(tenantBytes(t, tn)[tn.Path()+"-wal"]) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL still holds %d bytes 5 s after the reader ended", len(tenantBytes(t, tn)[tn.Path()+"-wal"]))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, v := range erasedValues {
		if anyHolds(tenantBytes(t, tn), v) {
			t.Errorf("a file holds %q once the WAL is truncated", v)
		}
	}
}

// TestErasedRowsStayErased: a device's write queued before an erasure
// (an admin's tablet, offline) brings neither the erased profile back nor
// a row naming it; once the practice creates the profile again, devices
// write it as before.
func TestErasedRowsStayErased(t *testing.T) {
	ctx := context.Background()
	_, tn, _ := newTenant(t, nil)
	mustApply(t, tn, "seed", `[{"entity":"accounts","op":"upsert","id":"a1","fields":{"role":"admin","app_enabled":true}}]`)
	admin := model.Viewer{ID: "a1", Role: model.RoleAdmin}
	p, ses := uid("patient"), uid("session")
	devicePush(t, tn, admin, "tablet", []string{"m1"}, `[{"entity":"profiles","op":"upsert","id":"`+p+`","fields":{"owner_id":"a1","first_name":"Zyxwvuts"}}]`)
	mustApply(t, tn, "erase", `[{"entity":"profiles","op":"erase","id":"`+p+`"}]`)
	res := devicePush(t, tn, admin, "tablet", []string{"m2", "m3"}, `[
		{"entity":"profiles","op":"upsert","id":"`+p+`","fields":{"phone":"0170 1"}},
		{"entity":"sessions","op":"upsert","id":"`+ses+`","fields":{"profile_id":"`+p+`","therapist_id":"a1","protocol":"offline notes"}}
	]`)
	if !errors.Is(res.Refused[0], model.ErrForbidden) || !errors.Is(res.Refused[1], model.ErrForbidden) || len(res.Changes) != 0 {
		t.Fatalf("queued writes of the erased patient = refused %v, logged %v; want both forbidden", res.Refused, res.Changes)
	}
	if !errors.Is(res.Refused[0], model.ErrErased) || !errors.Is(res.Refused[1], model.ErrErased) {
		t.Errorf("queued writes of the erased patient = refused %v; want both erased (ErrErased)", res.Refused)
	}
	if _, err := tn.Row(ctx, model.Profiles, p); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the erased profile came back: %v", err)
	}
	mustApply(t, tn, "again", `[{"entity":"profiles","op":"upsert","id":"`+p+`","fields":{"owner_id":"a1","first_name":"Neu"}}]`)
	res = devicePush(t, tn, admin, "tablet", []string{"m4"}, `[{"entity":"sessions","op":"upsert","id":"`+ses+`","fields":{"profile_id":"`+p+`","therapist_id":"a1"}}]`)
	if len(res.Refused) != 0 || len(res.Changes) != 1 {
		t.Errorf("a session of the profile the practice created again = refused %v; want it written", res.Refused)
	}
}
