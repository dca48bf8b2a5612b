package store

import "context"

// RowIDs returns the ids of every row of entity (for tests).
func (t *Tenant) RowIDs(ctx context.Context, entity string) ([]string, error) {
	rows, err := t.rdb.QueryContext(ctx, `SELECT id FROM `+quote(entity)+` ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}
