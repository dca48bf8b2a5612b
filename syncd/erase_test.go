package syncd_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/syncd"
)

// TestErasureStreams: an erasure reaches every live connection as deletes
// of what it saw, then caught_up with the new history: the owner, a
// member it was shared to (who saw another therapist's session through
// the share), the therapist of one of its sessions, a course's
// therapist, a secretary and the practice; none of them gets resync, and
// each holds what a fresh shard holds. A device connecting with the old
// history gets resync; the tenant's shard files are gone.
func TestErasureStreams(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	e.push(t, "more", `[
		{"entity":"accounts","op":"upsert","id":"m2","fields":{"name":"Lena","role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m3","fields":{"name":"Ole","role":"member","app_enabled":true}},
		{"entity":"accounts","op":"upsert","id":"m4","fields":{"name":"Pia","role":"member","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p-zyx","fields":{"owner_id":"m1","first_name":"Zyxwvuts","last_name":"Erasure"}},
		{"entity":"profile_shares","op":"upsert","id":"sh-zyx","fields":{"profile_id":"p-zyx","account_id":"m2","shared_by":"m1"}},
		{"entity":"sessions","op":"upsert","id":"ses-z1","fields":{"profile_id":"p-zyx","therapist_id":"m1","protocol":"Erasure protocol 1"}},
		{"entity":"sessions","op":"upsert","id":"ses-z3","fields":{"profile_id":"p-zyx","therapist_id":"m3","protocol":"Erasure protocol 3"}},
		{"entity":"transactions","op":"upsert","id":"tx-z","fields":{"account_id":"m1","profile_id":"p-zyx","session_id":"ses-z1","kind":"invoice","amount_cents":3800}},
		{"entity":"courses","op":"upsert","id":"crs","fields":{"therapist_id":"m4","title":"Rücken"}},
		{"entity":"course_members","op":"upsert","id":"cm-z","fields":{"course_id":"crs","profile_id":"p-zyx","units_total":10}},
		{"entity":"attendances","op":"upsert","id":"at-z","fields":{"course_id":"crs","profile_id":"p-zyx","date":"2026-11-02","signature":"Erasure signature"}}
	]`)
	ctx := context.Background()
	old, _ := e.T.Log(ctx)
	type follower struct {
		account string
		ws      *websocket.Conn
		state   rows
	}
	var fs []*follower
	for _, acc := range []string{"m1", "m2", "m3", "m4", "s1", "a1"} {
		ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, acc, "phone-"+acc))
		f := &follower{account: acc, ws: ws, state: rows{}}
		converge(t, e, ws, f.state, acc)
		fs = append(fs, f)
	}
	for _, f := range fs {
		if f.account != "s1" && f.account != "a1" && f.state[model.Profiles]["p-zyx"] == nil {
			t.Fatalf("%s does not see p-zyx before the erasure: the test tests nothing", f.account)
		}
	}
	if fs[1].state[model.Sessions]["ses-z3"] == nil {
		t.Fatalf("m2 does not see m3's session through the share")
	}
	practice, _, _ := dial(t, e.URL, "/v1/practice/sync?cursor=0", e.Key)
	until(t, practice, "caught_up")
	stale := filepath.Join(e.Store.Dir(), shardbuilder.ShardDir(e.T.ID(), "m1"), "3.db")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("Zyxwvuts"), 0o600); err != nil {
		t.Fatal(err)
	}

	seq := e.push(t, "erase", `[{"entity":"profiles","op":"erase","id":"p-zyx"}]`)
	now, _ := e.T.Log(ctx)
	if now.History == old.History || now.Seq != seq {
		t.Fatalf("log after the erasure = %+v; want a new history at seq %d", now, seq)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a shard file of the old history survived the erasure: %v", err)
	}
	for _, f := range fs {
		last := converge(t, e, f.ws, f.state, f.account) // fails on resync
		for entity, ids := range map[string][]string{model.Profiles: {"p-zyx"}, model.Sessions: {"ses-z1", "ses-z3"}, model.ProfileShares: {"sh-zyx"},
			model.Transactions: {"tx-z"}, model.CourseMembers: {"cm-z"}, model.Attendances: {"at-z"}} {
			for _, id := range ids {
				if f.state[entity][id] != nil {
					t.Errorf("%s still holds %s/%s", f.account, entity, id)
				}
			}
		}
		// A caught_up of the new history follows the deletes.
		if last.History != now.History {
			t.Errorf("%s's caught_up after the erasure names history %q; want %q", f.account, last.History, now.History)
		}
	}
	_, seen := until(t, practice, "caught_up")
	if n := len(seen); n != 7 {
		t.Errorf("the practice's stream got %d changes of the erasure; want its 7 deletes", n)
	}
	for _, c := range seen {
		if c["op"] != "delete" || c["fields"] != nil {
			t.Errorf("the practice's stream got %v; want field-less deletes", c)
		}
	}

	// Offline with the old history: resync; with the new: caught up.
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=1&history="+old.History, e.token(t, "m1", "tablet-m1"))
	if f := next(t, ws, 3*time.Second); f.Type != "resync" || !strings.Contains(f.Reason, "rewritten") {
		t.Errorf("a device of the old history got %+v; want resync", f)
	}
	ws, _, _ = dial(t, e.URL, "/v1/device/sync?cursor="+strconv.FormatInt(seq, 10)+"&history="+now.History, e.token(t, "m1", "tablet-2"))
	if f, _ := until(t, ws, "caught_up"); f.Seq != seq || f.History != now.History {
		t.Errorf("a device of the new history got caught_up %+v; want seq %d", f, seq)
	}
}

// TestDeviceErasureRejected: a device's erasure, an admin's too, gets a
// reject (forbidden) and changes nothing.
func TestDeviceErasureRejected(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "tablet"))
	until(t, ws, "caught_up")
	before, _ := e.T.Log(context.Background())
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"push","mutations":[{"id":"e1","entity":"profiles","op":"erase","row_id":"p1"}]}`)); err != nil {
		t.Fatal(err)
	}
	f, _ := until(t, ws, "reject")
	if f.MutationID != "e1" || f.Error != "forbidden" {
		t.Errorf("erasure by an admin's device = %+v; want a reject forbidden", f)
	}
	after, _ := e.T.Log(context.Background())
	if row, err := e.T.Row(context.Background(), model.Profiles, "p1"); err != nil || row["first_name"] != "Anna" || after != before {
		t.Errorf("after the refused erasure p1 = %v, %v, log %+v → %+v; want nothing changed", row, err, before, after)
	}
}

// TestErasureOfThePastOnly: erasing a profile deleted before rewrites only
// the log: no change is logged, yet live devices learn the new history
// from a caught_up at the same seq.
func TestErasureOfThePastOnly(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	e.push(t, "gone", `[{"entity":"profiles","op":"upsert","id":"p-old","fields":{"owner_id":"m1","first_name":"Zyxwvuts"}},{"entity":"profiles","op":"delete","id":"p-old"}]`)
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "a1", "tablet"))
	first, _ := until(t, ws, "caught_up")
	seq := e.push(t, "erase", `[{"entity":"profiles","op":"erase","id":"p-old"}]`)
	now, _ := e.T.Log(context.Background())
	if seq != first.Seq || now.History == first.History {
		t.Fatalf("erasing the past = seq %d, history %s; want seq %d kept and a new history", seq, now.History, first.Seq)
	}
	f, seen := until(t, ws, "caught_up")
	if f.Seq != seq || f.History != now.History || len(seen) != 0 {
		t.Errorf("after erasing the past the device got %d changes and caught_up %+v; want none and the new history %s", len(seen), f, now.History)
	}
}

// TestLargeErasureStreams: an erasure longer than one batch of the feed's
// read (500 changes) reaches a member as deletes, without resync, also
// when its first delete takes the profile out of the member's sight (the
// member's only session goes first) and the rows it saw through it go in
// the next batch.
func TestLargeErasureStreams(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	var b strings.Builder
	b.WriteString(`[{"entity":"accounts","op":"upsert","id":"m2","fields":{"name":"Lena","role":"member","app_enabled":true}},
		{"entity":"profiles","op":"upsert","id":"p-big","fields":{"owner_id":"m1","first_name":"Zyxwvuts"}},
		{"entity":"sessions","op":"upsert","id":"ses-m2","fields":{"profile_id":"p-big","therapist_id":"m2","protocol":"x"}}`)
	for i := range 700 {
		b.WriteString(`,{"entity":"sessions","op":"upsert","id":"ses-` + strconv.Itoa(i) + `","fields":{"profile_id":"p-big","therapist_id":"m1","protocol":"x"}}`)
	}
	b.WriteString(`]`)
	e.push(t, "big", b.String())
	ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0", e.token(t, "m2", "phone"))
	state := rows{}
	converge(t, e, ws, state, "m2")
	if len(state[model.Sessions]) != 701 {
		t.Fatalf("m2 holds %d sessions before the erasure; want 701", len(state[model.Sessions]))
	}
	res := e.push(t, "erase", `[{"entity":"profiles","op":"erase","id":"p-big"}]`)
	if cs, _, _ := e.T.Changes(context.Background(), res-702, 1); len(cs) != 1 || cs[0].ID != "ses-m2" {
		t.Fatalf("the erasure's first delete is %v; want m2's session, so that m2 loses sight first", cs)
	}
	converge(t, e, ws, state, "m2")
	if len(state[model.Sessions]) != 0 || state[model.Profiles]["p-big"] != nil {
		t.Errorf("after the erasure m2 holds %d sessions, profiles %v; want none of p-big's", len(state[model.Sessions]), state[model.Profiles])
	}
}

// TestQueuedWriteOfErasedRejected: an admin device's write queued before
// an erasure, of a row naming the erased profile, gets a reject `erased`;
// a member's (a row naming a profile it does not see, the erased one's
// too) keeps the uniform `forbidden`.
func TestQueuedWriteOfErasedRejected(t *testing.T) {
	e := newTenantEnv(t, syncd.Config{})
	e.push(t, "erase", `[{"entity":"profiles","op":"erase","id":"p1"}]`)
	now, _ := e.T.Log(context.Background())
	ses := "0b9c6f7e-3d1a-4c2b-9e8f-7a6b5c4d3e2f"
	for _, d := range []struct{ account, code, words string }{
		{"a1", "erased", "which was erased"},
		{"m1", "forbidden", "is not a row this account may write"},
	} {
		ws, _, _ := dial(t, e.URL, "/v1/device/sync?cursor=0&history="+now.History, e.token(t, d.account, "tablet-"+d.account))
		until(t, ws, "caught_up")
		push := `{"type":"push","mutations":[{"id":"w1","entity":"sessions","op":"upsert","row_id":"` + ses + `",
			"fields":{"profile_id":"p1","therapist_id":"` + d.account + `","protocol":"offline"}}]}`
		if err := ws.WriteMessage(websocket.TextMessage, []byte(push)); err != nil {
			t.Fatal(err)
		}
		if f, _ := until(t, ws, "reject"); f.MutationID != "w1" || f.Error != d.code || !strings.Contains(f.Message, d.words) {
			t.Errorf("%s's queued session of the erased patient got %+v; want %s (%q)", d.account, f, d.code, d.words)
		}
		ws.Close()
	}
}
