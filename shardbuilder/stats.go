package shardbuilder

// This file is the statistics of DESIGN §4, computed over a view: a shard
// file with exactly what one account sees (WriteFile), so that the figures
// count no row the account may not see.

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Period is a range of days in a time zone, both ends inclusive.
type Period struct {
	From, To time.Time // dates (YYYY-MM-DD at 00:00) in Loc
	Loc      *time.Location
}

// MonthToDate is the default period of the statistics: the calendar month
// of now in loc, up to now's day.
func MonthToDate(now time.Time, loc *time.Location) Period {
	t := now.In(loc)
	return Period{
		From: time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc),
		To:   time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc),
		Loc:  loc,
	}
}

// ParsePeriod reads from and to (YYYY-MM-DD, either may be empty) in loc;
// an empty end is that of MonthToDate(now, loc).
func ParsePeriod(from, to string, now time.Time, loc *time.Location) (Period, error) {
	p := MonthToDate(now, loc)
	for _, f := range []struct {
		name, v string
		into    *time.Time
	}{{"from", from, &p.From}, {"to", to, &p.To}} {
		if f.v == "" {
			continue
		}
		d, err := time.ParseInLocation(time.DateOnly, f.v, loc)
		if err != nil {
			return p, fmt.Errorf("%s must be a date (YYYY-MM-DD), got %q", f.name, f.v)
		}
		*f.into = d
	}
	if p.From.After(p.To) {
		return p, fmt.Errorf("from (%s) is after to (%s)", p.From.Format(time.DateOnly), p.To.Format(time.DateOnly))
	}
	return p, nil
}

// contains reports whether instant t falls on a day of p, in p's zone.
func (p Period) contains(t time.Time) bool {
	d := t.In(p.Loc)
	day := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, p.Loc)
	return !day.Before(p.From) && !day.After(p.To)
}

// Stats are the figures of DESIGN §4 over one account's view and period.
type Stats struct {
	// RevenueCents (Umsatz) sums the invoices with status billed or paid
	// dated in the period.
	RevenueCents int64 `json:"revenue_cents"`
	// ExpensesCents sums the expenses dated in the period, as a positive
	// amount (an expense's amount counts by its size, whatever its sign).
	ExpensesCents int64 `json:"expenses_cents"`
	// ProfitCents (Gewinn) is revenue less expenses.
	ProfitCents int64 `json:"profit_cents"`
	// PaidCents sums the revenue's invoices with status paid.
	PaidCents int64 `json:"paid_cents"`
	// OpenCents sums the revenue's invoices with status billed.
	OpenCents int64 `json:"open_cents"`
	// UnbilledCents and UnbilledSessions (nicht verrechnete Umsätze) are
	// the prices and the count of the sessions with status done starting
	// in the period that no billed or paid invoice names by session_id.
	UnbilledCents    int64 `json:"unbilled_cents"`
	UnbilledSessions int64 `json:"unbilled_sessions"`
}

// ComputeStats computes the statistics of period p over the view at path
// (a shard file).
func ComputeStats(ctx context.Context, path string, p Period) (Stats, error) {
	var st Stats
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return st, err
	}
	defer db.Close()
	from, to := p.From.Format(time.DateOnly), p.To.Format(time.DateOnly)
	err = db.QueryRowContext(ctx, `SELECT
		coalesce(sum(CASE WHEN kind = 'invoice' AND status IN ('billed', 'paid') THEN amount_cents END), 0),
		coalesce(sum(CASE WHEN kind = 'invoice' AND status = 'paid' THEN amount_cents END), 0),
		coalesce(sum(CASE WHEN kind = 'invoice' AND status = 'billed' THEN amount_cents END), 0),
		coalesce(sum(CASE WHEN kind = 'expense' THEN abs(amount_cents) END), 0)
		FROM transactions WHERE date BETWEEN ? AND ?`, from, to).Scan(&st.RevenueCents, &st.PaidCents, &st.OpenCents, &st.ExpensesCents)
	if err != nil {
		return st, fmt.Errorf("sum transactions: %w", err)
	}
	st.ProfitCents = st.RevenueCents - st.ExpensesCents
	// A session's day is that of its start in the tenant's zone: the SQL
	// narrows by the written date ± 2 days (the writer's offset and the
	// tenant's differ by less), Go decides.
	rows, err := db.QueryContext(ctx, `SELECT starts_at, coalesce(price_cents, 0) FROM sessions s
		WHERE s.status = 'done' AND s.starts_at IS NOT NULL
		AND substr(s.starts_at, 1, 10) BETWEEN date(?, '-2 days') AND date(?, '+2 days')
		AND NOT EXISTS (SELECT 1 FROM transactions x WHERE x.kind = 'invoice' AND x.status IN ('billed', 'paid') AND x.session_id = s.id)`,
		from, to)
	if err != nil {
		return st, fmt.Errorf("unbilled sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			at    string
			price int64
		)
		if err := rows.Scan(&at, &price); err != nil {
			return st, err
		}
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			continue // stored values are validated timestamps; nothing else counts
		}
		if p.contains(t) {
			st.UnbilledSessions++
			st.UnbilledCents += price
		}
	}
	return st, rows.Err()
}
