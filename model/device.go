package model

import (
	"crypto/subtle"
	"slices"
)

// This file decides whether a device may sync (DESIGN §5), in one function
// that connect, download, the check-in view, every push and every re-read
// of live connections' access call (through the store): DeviceMaySync.

// The licenses a tenant can hold.
const (
	LicenseSync = "sync"
	LicenseApp  = "app"
)

// AppLicenses are the licenses a tenant needs for its devices to sync.
var AppLicenses = []string{LicenseSync, LicenseApp}

// MissingAppLicense returns the first of AppLicenses that held lacks, ""
// when it holds them all.
func MissingAppLicense(held []string) string {
	for _, l := range AppLicenses {
		if !slices.Contains(held, l) {
			return l
		}
	}
	return ""
}

// DeviceFacts is what decides whether a device may sync: the device, the
// token it presented, its tenant's licenses and its account's access.
type DeviceFacts struct {
	// LoggedOut and Revoked are the device's state.
	LoggedOut bool
	Revoked   bool
	// TokenHash is the hash of the device's current token; Presented is
	// the hash of the token presented, nil when it is not to be checked
	// (the device was found by it).
	TokenHash []byte
	Presented []byte
	// Licenses are the licenses the tenant holds.
	Licenses []string
	// Account is the access of the device's account (Exists false when
	// there is none).
	Account AppAccess
}

// SyncDenial says why a device may not sync, SyncAllowed when it may.
type SyncDenial int

// The answers of DeviceMaySync, in the order it checks them.
const (
	SyncAllowed    SyncDenial = iota
	SyncTokenEnded            // logged out, or the token presented is no longer the device's
	SyncRevoked               // the device was revoked
	SyncNoLicense             // the tenant lacks one of AppLicenses
	SyncNoAccount             // the device's account is gone
	SyncAccessOff             // the account's app access is off
)

// DeviceMaySync decides whether a device may sync now (DESIGN §5): at
// connect, on every push and whenever its live connections' access is
// read again. For SyncNoLicense it also returns the missing license.
func DeviceMaySync(f DeviceFacts) (SyncDenial, string) {
	if f.LoggedOut || f.Presented != nil && subtle.ConstantTimeCompare(f.Presented, f.TokenHash) != 1 {
		return SyncTokenEnded, ""
	}
	if f.Revoked {
		return SyncRevoked, ""
	}
	if l := MissingAppLicense(f.Licenses); l != "" {
		return SyncNoLicense, l
	}
	if !f.Account.Exists {
		return SyncNoAccount, ""
	}
	if !f.Account.On() {
		return SyncAccessOff, ""
	}
	return SyncAllowed, ""
}
