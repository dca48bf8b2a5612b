package shardbuilder_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/therasync/therasync/model"
	"github.com/therasync/therasync/shardbuilder"
	"github.com/therasync/therasync/store"
)

// Environment of the child process that BenchmarkShardBuild/peak starts to
// measure the peak memory of one build on its own.
const (
	childEnvSrc     = "SHARDBENCH_SRC"     // central database path
	childEnvTenant  = "SHARDBENCH_TENANT"  // tenant id
	childEnvAccount = "SHARDBENCH_ACCOUNT" // account id
	childEnvOut     = "SHARDBENCH_OUT"     // shard path to write
)

func TestMain(m *testing.M) {
	if src := os.Getenv(childEnvSrc); src != "" {
		_, err := shardbuilder.WriteFile(context.Background(), shardbuilder.Source{TenantID: os.Getenv(childEnvTenant), Path: src},
			os.Getenv(childEnvAccount), os.Getenv(childEnvOut), time.Now())
		if err != nil {
			fmt.Fprintln(os.Stderr, "child build:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchTenant fills a tenant with about rows rows in realistic proportions:
// 5% patients, 55% sessions with protocols, 30% transactions, course
// members and attendances, shares. acc-admin is an admin, acc-m1 a member.
func benchTenant(tb testing.TB, rows int) *store.Tenant {
	tb.Helper()
	_, tn := newTenant(tb)
	var batch []model.Change
	total := 0
	add := func(entity, id string, f map[string]any) {
		batch = append(batch, upsert(entity, id, f))
		total++
		if len(batch) == 5000 {
			push(tb, tn, batch...)
			batch = batch[:0]
		}
	}
	therapists := 20
	for i := range therapists {
		role := model.RoleMember
		if i == 0 {
			role = model.RoleAdmin
		}
		id := fmt.Sprintf("acc-m%d", i)
		if i == 0 {
			id = "acc-admin"
		}
		add(model.Accounts, id, map[string]any{"name": "Therapeut " + id, "email": id + "@praxis.de", "role": role, "app_enabled": true, "practice_ids": []string{"pr1", "pr2"}})
	}
	th := func(i int) string {
		if i%therapists == 0 {
			return "acc-admin"
		}
		return fmt.Sprintf("acc-m%d", i%therapists)
	}
	add(model.Practices, "pr1", map[string]any{"name": "Praxis Mitte"})
	add(model.Practices, "pr2", map[string]any{"name": "Praxis am See"})
	patients := rows * 5 / 100
	for i := range patients {
		add(model.Profiles, fmt.Sprintf("pat-%06d", i), map[string]any{"owner_id": th(i), "first_name": "Vorname", "last_name": fmt.Sprintf("Nachname %d", i),
			"birth_date": "1970-01-01", "phone": "+49 30 1234567", "email": fmt.Sprintf("p%d@example.org", i), "address": "Hauptstraße 1, 10115 Berlin", "insurance": "AOK"})
	}
	for i := range rows / 200 {
		to := th(i * 7)
		if i%10 == 0 {
			to = "*"
		}
		add(model.ProfileShares, fmt.Sprintf("sh-%06d", i), map[string]any{"profile_id": fmt.Sprintf("pat-%06d", (i*13)%patients), "account_id": to, "shared_by": "acc-admin", "shared_at": "2026-01-01T10:00:00Z"})
	}
	courses := 40
	for i := range courses {
		add(model.Courses, fmt.Sprintf("crs-%02d", i), map[string]any{"practice_id": "pr1", "therapist_id": th(i), "title": "Rehasport Rücken", "weekday": int64(1 + i%7), "start_time": "09:00", "duration_min": int64(45), "capacity": int64(15)})
	}
	for i := range rows * 3 / 100 {
		add(model.CourseMembers, fmt.Sprintf("cm-%06d", i), map[string]any{"course_id": fmt.Sprintf("crs-%02d", i%courses), "profile_id": fmt.Sprintf("pat-%06d", (i*7)%patients), "units_total": int64(50), "units_used": int64(3)})
	}
	for i := range rows * 65 / 1000 {
		add(model.Attendances, fmt.Sprintf("att-%06d", i), map[string]any{"course_id": fmt.Sprintf("crs-%02d", i%courses), "profile_id": fmt.Sprintf("pat-%06d", (i*7)%patients), "date": "2026-11-20", "checked_in_at": "2026-11-20T09:01:00Z", "signature": "iVBORw0KGgo=", "springer": false, "device_id": "tablet-1"})
	}
	for i := 0; total < rows*70/100+1 && i < rows; i++ {
		add(model.Sessions, fmt.Sprintf("ses-%07d", i), map[string]any{"profile_id": fmt.Sprintf("pat-%06d", i%patients), "therapist_id": th(i), "practice_id": "pr1",
			"starts_at": "2026-11-20T09:00:00+01:00", "duration_min": int64(30), "price_cents": int64(3800), "status": "done",
			"protocol": "Befund: Bewegungseinschränkung LWS, Schmerz VAS 5/10. Maßnahme: manuelle Therapie, Hausaufgaben besprochen."})
	}
	for i := 0; total < rows; i++ {
		add(model.Transactions, fmt.Sprintf("tx-%07d", i), map[string]any{"account_id": th(i), "profile_id": fmt.Sprintf("pat-%06d", i%patients), "kind": "invoice", "amount_cents": int64(3800), "status": "paid", "date": "2026-11-20"})
	}
	if len(batch) > 0 {
		push(tb, tn, batch...)
	}
	return tn
}

// BenchmarkShardBuild measures building a 100,000-row shard (an admin's:
// every row) side by side with the sqlite3 command-line tool loading the
// same rows into the same schema, and the peak memory of one build of a
// 200,000-row shard in a process of its own. scripts/bench-shard runs it
// and prints the ratio.
func BenchmarkShardBuild(b *testing.B) {
	const rows = 100000
	tn := benchTenant(b, rows)
	src := shardbuilder.Source{TenantID: tn.ID(), Path: tn.Path()}
	// The schema the sqlite3 tool loads into: exactly the Go-built shard's.
	refPath := filepath.Join(b.TempDir(), "ref.db")
	ref, err := shardbuilder.WriteFile(context.Background(), src, "acc-admin", refPath, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	script := sqlite3Script(b, refPath, tn.Path())

	b.Run(fmt.Sprintf("go/rows=%d", ref.Rows), func(b *testing.B) {
		dir := b.TempDir()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			if _, err := shardbuilder.WriteFile(context.Background(), src, "acc-admin", filepath.Join(dir, fmt.Sprintf("go-%d.db", i)), time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(ref.Rows*int64(b.N))/time.Since(start).Seconds(), "rows/s")
	})
	b.Run(fmt.Sprintf("go-member/rows=%d", ref.Rows), func(b *testing.B) {
		dir := b.TempDir()
		var n int64
		start := time.Now()
		for i := range b.N {
			m, err := shardbuilder.WriteFile(context.Background(), src, "acc-m1", filepath.Join(dir, fmt.Sprintf("member-%d.db", i)), time.Now())
			if err != nil {
				b.Fatal(err)
			}
			n += m.Rows
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "rows/s")
		b.ReportMetric(float64(n/int64(b.N)), "shard-rows")
	})
	b.Run(fmt.Sprintf("sqlite3/rows=%d", ref.Rows), func(b *testing.B) {
		dir := b.TempDir()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			out := filepath.Join(dir, fmt.Sprintf("cli-%d.db", i))
			cmd := exec.Command("sqlite3", out)
			cmd.Stdin = strings.NewReader(script)
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("sqlite3: %v\n%s", err, msg)
			}
			f, err := os.Open(out) // the same fsync the Go build does
			if err != nil {
				b.Fatal(err)
			}
			f.Sync()
			f.Close()
		}
		b.ReportMetric(float64(ref.Rows*int64(b.N))/time.Since(start).Seconds(), "rows/s")
	})
	b.Run("peak/rows=200000", func(b *testing.B) {
		big := benchTenant(b, 200000)
		var peak int64
		for i := range b.N {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnvSrc+"="+big.Path(), childEnvTenant+"="+big.ID(), childEnvAccount+"=acc-admin",
				childEnvOut+"="+filepath.Join(b.TempDir(), strconv.Itoa(i)+".db"))
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("child build: %v\n%s", err, msg)
			}
			peak = max(peak, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) // KiB on Linux
		}
		b.ReportMetric(float64(peak)/1024, "peak-MiB")
	})
}

// sqlite3Script is what the sqlite3 tool runs to load every row of central
// into the schema of the shard at shardPath, with the builder's pragmas.
func sqlite3Script(tb testing.TB, shardPath, central string) string {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+shardPath+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type = 'index', rowid`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var tables, idx []string
	var names []string
	for rows.Next() {
		var typ, name, ddl string
		rows.Scan(&typ, &name, &ddl)
		if typ == "index" {
			idx = append(idx, ddl+";")
			continue
		}
		tables = append(tables, ddl+";")
		if name != "sync_meta" {
			names = append(names, name)
		}
	}
	var s strings.Builder
	s.WriteString("PRAGMA page_size=16384;\nPRAGMA journal_mode=OFF;\nPRAGMA synchronous=OFF;\nPRAGMA main.locking_mode=EXCLUSIVE;\nPRAGMA cache_size=-16000;\n")
	fmt.Fprintf(&s, "ATTACH DATABASE '%s' AS c;\nBEGIN;\n", central)
	s.WriteString(strings.Join(tables, "\n") + "\n")
	for _, n := range names {
		fmt.Fprintf(&s, "INSERT INTO main.\"%s\" SELECT * FROM c.\"%s\";\n", n, n)
	}
	s.WriteString(strings.Join(idx, "\n") + "\n")
	s.WriteString("INSERT INTO sync_meta VALUES ('seq', '1');\nCOMMIT;\nDETACH DATABASE c;\n")
	return s.String()
}
