package device

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/therasync/therasync/model"
)

// TestQueryIsReadOnly: Query runs on a read-only connection: a statement
// that writes fails and changes nothing, also when it asks SQLite to allow
// writes first; reads see the latest local write.
func TestQueryIsReadOnly(t *testing.T) {
	for _, tt := range []struct {
		name  string
		query []string // run in order, DIR the device directory; the last must fail
	}{
		{name: "delete returning", query: []string{`DELETE FROM profiles RETURNING id`}},
		{name: "update", query: []string{`UPDATE profiles SET first_name = 'X'`}},
		{name: "insert", query: []string{`INSERT INTO profiles(id, first_name) VALUES ('p9', 'X') RETURNING id`}},
		{name: "drop table", query: []string{`DROP TABLE profiles`}},
		{name: "the cursor", query: []string{`UPDATE sync_meta SET value = '99' WHERE key = 'seq' RETURNING value`}},
		{name: "writes allowed first", query: []string{`PRAGMA query_only = 0`, `DELETE FROM profiles RETURNING id`}},
		{name: "a second statement", query: []string{`SELECT 1; DELETE FROM profiles`}},
		{name: "an attached file", query: []string{`ATTACH DATABASE 'DIR/other.db' AS other`, `CREATE TABLE other.t (x)`}},
		{name: "a copy", query: []string{`VACUUM INTO 'DIR/other.db'`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := openClient(t, offline, 5, startRows())
			ctx := context.Background()
			var last error
			for _, q := range tt.query {
				_, last = c.Query(ctx, strings.ReplaceAll(q, "DIR", c.Dir()))
			}
			if last == nil {
				t.Errorf("Query(%q) = nil; want it refused", tt.query[len(tt.query)-1])
			}
			checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Anna"}, "sessions/s1": {"status": "planned"}, "profiles/p9": nil})
			if got := cursor(t, c); got != 5 {
				t.Errorf("cursor = %d; want 5", got)
			}
			if left, _ := filepath.Glob(filepath.Join(c.Dir(), "other.db*")); len(left) != 0 {
				t.Errorf("Query wrote %v", left)
			}
		})
	}
	t.Run("sees local writes", func(t *testing.T) {
		c := openClient(t, offline, 5, startRows())
		write(t, c, model.Profiles, model.OpUpsert, "p1", map[string]any{"first_name": "Bea"})
		checkRows(t, c, map[string]map[string]any{"profiles/p1": {"first_name": "Bea"}})
	})
}
