package model

import (
	"fmt"
	"maps"
	"time"
)

// This file is the transaction reference rule of DESIGN §4: references are
// unique per tenant and carry the creating account's id; the server
// assigns <year>-<n>-<account_id> on acceptance, n counting per account and
// year. The counter is the store's (NextRef); the rule is here.

// NextRef returns the next n of account's references in year (1, 2, …),
// counted durably with the write that uses it.
type NextRef func(account string, year int) (int64, error)

// Reference formats the reference of a transaction: <year>-<n>-<account>.
func Reference(year int, n int64, account string) string {
	return fmt.Sprintf("%d-%d-%s", year, n, account)
}

// AssignReference decides the reference of transaction upsert c, index
// being its position in its batch and at the time of its acceptance in the
// tenant's time zone: a new transaction (or one still without a reference)
// is given the next reference of its account_id in at's year; a reference
// given by a writer is refused unless it repeats the current one (then it
// is dropped: nothing to write). A new reference needs its account_id to
// name an account. It returns c with the fields to write (a
// copy of c's when they differ), a *ValidationError, or look's or next's
// error. c.Entity must be Transactions.
func AssignReference(index int, c Change, look Rows, at time.Time, next NextRef) (Change, error) {
	before, err := look.Row(Transactions, c.ID)
	if err != nil {
		return c, err
	}
	exists := before != nil
	cur, has := before["reference"].(string)
	if given, ok := c.Fields["reference"]; ok {
		if !exists || !has || given != cur {
			return c, &ValidationError{Index: index, Entity: Transactions, Field: "reference", Reason: "is assigned by the server and cannot be set"}
		}
		c.Fields = maps.Clone(c.Fields)
		delete(c.Fields, "reference") // unchanged: nothing to write
	}
	if exists && has {
		return c, nil
	}
	account, _ := c.Fields["account_id"].(string)
	if account == "" {
		if exists {
			// A row created without account_id cannot be: creation requires it.
			return c, fmt.Errorf("transaction %s has no reference", c.ID)
		}
		return c, &ValidationError{Index: index, Entity: Transactions, Field: "account_id", Reason: "is required when a transaction is created"}
	}
	holder, err := look.Row(Accounts, account)
	if err != nil {
		return c, err
	}
	if holder == nil {
		// Accounts are seen by every role: naming one reveals nothing.
		return c, &ValidationError{Index: index, Entity: Transactions, Field: "account_id", Reason: fmt.Sprintf("names no account (%q): a reference carries its account's id", account)}
	}
	n, err := next(account, at.Year())
	if err != nil {
		return c, err
	}
	c.Fields = maps.Clone(c.Fields)
	c.Fields["reference"] = Reference(at.Year(), n, account)
	return c, nil
}
