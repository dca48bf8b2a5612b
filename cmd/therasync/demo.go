package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// demoAccount is an account of the demo tenant, as written to dev.json.
type demoAccount struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Role  string `json:"role"`
}

// demoChange is one change of the demo data, in the wire form of a practice
// push.
type demoChange struct {
	Entity string         `json:"entity"`
	Op     string         `json:"op"`
	ID     string         `json:"id"`
	Fields map[string]any `json:"fields"`
}

var demoAccounts = []demoAccount{
	{ID: "acc-admin", Name: "Dr. Katrin Weber", Email: "katrin.weber@praxis-demo.de", Role: "admin"},
	{ID: "acc-jonas", Name: "Jonas Becker", Email: "jonas.becker@praxis-demo.de", Role: "member"},
	{ID: "acc-lena", Name: "Lena Hoffmann", Email: "lena.hoffmann@praxis-demo.de", Role: "member"},
	{ID: "acc-mehmet", Name: "Mehmet Yilmaz", Email: "mehmet.yilmaz@praxis-demo.de", Role: "member"},
	{ID: "acc-sabine", Name: "Sabine Krüger", Email: "sabine.krueger@praxis-demo.de", Role: "secretary"},
}

var (
	demoFirst = []string{"Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannah", "Jan", "Julia", "Karl",
		"Laura", "Lukas", "Marie", "Max", "Mia", "Nina", "Noah", "Olga", "Paul", "Sophie", "Tim", "Ursula", "Volker", "Werner", "Yvonne"}
	demoLast = []string{"Müller", "Schmidt", "Schneider", "Fischer", "Meyer", "Wagner", "Schulz", "Koch", "Richter", "Klein",
		"Wolf", "Neumann", "Schwarz", "Zimmermann", "Braun", "Hofmann", "Hartmann", "Lange", "Werner", "Krause", "Lehmann", "Köhler"}
	demoStreets   = []string{"Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Lindenallee", "Am Markt", "Seestraße"}
	demoInsurance = []string{"AOK", "TK", "Barmer", "DAK", "IKK", "privat", "BG"}
	demoProtocol  = []string{
		"Befund: Bewegungseinschränkung LWS, Schmerz VAS 5/10. Maßnahme: manuelle Therapie, Hausaufgaben besprochen.",
		"Mobilisation Schulter rechts, Flexion verbessert (120°). Patient motiviert.",
		"KG am Gerät, Kraftausdauer Beine. Keine Beschwerden nach Belastung.",
		"Gesprächstherapie: Schlafprobleme, Belastung am Arbeitsplatz. Nächster Termin: Ressourcenarbeit.",
		"Lymphdrainage 45 min, Ödem linkes Bein rückläufig.",
		"Gangschule mit Unterarmgehstützen, Treppensteigen geübt.",
		"Atemtherapie, Entspannungsübungen. Patientin berichtet Besserung.",
		"Triggerpunktbehandlung Nacken, Kopfschmerz seltener.",
	}
)

// demoData returns the demo tenant's data around the day today as practice
// pushes of at most batchSize changes; courseHour (HH) is when the course
// held today starts. It is deterministic, so a restarted seeding repeats
// the same batch ids and applies nothing twice.
func demoData(today time.Time, courseHour string, batchSize int) [][]demoChange {
	r := rand.New(rand.NewPCG(2026, 11))
	var cs []demoChange
	add := func(entity, id string, fields map[string]any) {
		cs = append(cs, demoChange{Entity: entity, Op: "upsert", ID: id, Fields: fields})
	}
	add("practices", "pr-mitte", map[string]any{"name": "Praxis Mitte"})
	add("practices", "pr-see", map[string]any{"name": "Praxis am See"})
	therapists := []string{"acc-admin", "acc-jonas", "acc-lena", "acc-mehmet"}
	const patients = 200
	for i := range patients {
		first, last := demoFirst[r.IntN(len(demoFirst))], demoLast[r.IntN(len(demoLast))]
		birth := time.Date(1940+r.IntN(65), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC)
		add("profiles", fmt.Sprintf("pat-%03d", i), map[string]any{
			"owner_id":   therapists[i%len(therapists)],
			"first_name": first, "last_name": last,
			"birth_date": birth.Format(time.DateOnly),
			"phone":      fmt.Sprintf("+49 30 %07d", r.IntN(10000000)),
			"email":      fmt.Sprintf("patient%03d@example.org", i),
			"address":    fmt.Sprintf("%s %d, 10115 Berlin", demoStreets[r.IntN(len(demoStreets))], 1+r.IntN(120)),
			"insurance":  demoInsurance[r.IntN(len(demoInsurance))],
		})
	}
	shareAt := today.AddDate(0, -2, 0).Format(time.RFC3339)
	// A few shares, two of them to every member ("*"): a member sees its
	// own patients, these, and those of its sessions and courses, not all.
	for i := range 12 {
		p := fmt.Sprintf("pat-%03d", r.IntN(patients))
		to := therapists[1+r.IntN(3)]
		if i < 2 {
			to = "*"
		}
		add("profile_shares", fmt.Sprintf("share-%03d", i), map[string]any{"profile_id": p, "account_id": to, "shared_by": "acc-admin", "shared_at": shareAt})
	}
	start := today.AddDate(0, -6, 0)
	for i := range 3000 {
		day := start.AddDate(0, 0, r.IntN(210))
		at := time.Date(day.Year(), day.Month(), day.Day(), 8+r.IntN(10), 15*r.IntN(4), 0, 0, time.UTC)
		status := "done"
		switch {
		case at.After(today):
			status = "planned"
		case r.IntN(12) == 0:
			status = "cancelled"
		}
		// A patient's sessions are mostly with its owner; now and then a
		// colleague stands in (and so sees that patient).
		patient := r.IntN(patients)
		therapist := therapists[patient%len(therapists)]
		if r.IntN(100) == 0 {
			therapist = therapists[r.IntN(len(therapists))]
		}
		fields := map[string]any{
			"profile_id": fmt.Sprintf("pat-%03d", patient), "therapist_id": therapist,
			"practice_id": []string{"pr-mitte", "pr-see"}[r.IntN(2)], "starts_at": at.Format(time.RFC3339),
			"duration_min": []int{20, 30, 45, 60}[r.IntN(4)], "price_cents": []int{2500, 3800, 4500, 9000}[r.IntN(4)],
			"status": status,
		}
		if status == "done" {
			fields["protocol"] = demoProtocol[r.IntN(len(demoProtocol))]
		}
		id := fmt.Sprintf("ses-%04d", i)
		add("sessions", id, fields)
		if status == "done" && r.IntN(3) > 0 {
			paid := r.IntN(2) == 0
			st := "billed"
			if paid {
				st = "paid"
			}
			add("transactions", "inv-"+id, map[string]any{"account_id": therapist, "profile_id": fields["profile_id"],
				"session_id": id, "kind": "invoice", "amount_cents": fields["price_cents"], "status": st, "date": at.Format(time.DateOnly)})
			if paid {
				add("transactions", "pay-"+id, map[string]any{"account_id": therapist, "profile_id": fields["profile_id"],
					"session_id": id, "kind": "payment", "amount_cents": fields["price_cents"], "status": "paid", "date": at.AddDate(0, 0, 14).Format(time.DateOnly)})
			}
		}
	}
	for i := range 24 {
		add("transactions", fmt.Sprintf("exp-%02d", i), map[string]any{"account_id": "acc-admin", "kind": "expense",
			"amount_cents": -(5000 + r.IntN(50000)), "status": "paid", "date": start.AddDate(0, 0, 7*i).Format(time.DateOnly)})
	}
	courses := []struct{ id, title, therapist, practice, time string }{
		{"crs-ruecken", "Rehasport Rücken", "acc-jonas", "pr-mitte", "09:00"},
		{"crs-herz", "Rehasport Herzsport", "acc-lena", "pr-see", "17:30"},
		{"crs-wasser", "Funktionstraining Wassergymnastik", "acc-mehmet", "pr-see", "10:30"},
		{"crs-sturz", "Rehasport Sturzprophylaxe", "acc-jonas", "pr-mitte", "14:00"},
	}
	// One more course today, starting this hour, so that the check-in page
	// shows a running course whenever the demo starts.
	courses = append(courses, struct{ id, title, therapist, practice, time string }{
		"crs-jetzt", "Funktionstraining Trockengymnastik", "acc-lena", "pr-see", courseHour + ":00"})
	member := 0
	for ci, c := range courses {
		weekday := 1 + (int(today.Weekday())+6+ci)%7
		if c.id == "crs-jetzt" {
			weekday = 1 + (int(today.Weekday())+6)%7
		}
		add("courses", c.id, map[string]any{"practice_id": c.practice, "therapist_id": c.therapist, "title": c.title,
			"weekday": weekday, "start_time": c.time, "duration_min": 45, "capacity": 15})
		n := 8 + r.IntN(5)
		for k := range n {
			p := fmt.Sprintf("pat-%03d", (ci*37+k*5)%patients)
			add("course_members", fmt.Sprintf("cm-%03d", member), map[string]any{"course_id": c.id, "profile_id": p, "units_total": 50, "units_used": 0})
			member++
		}
	}
	// The accounts come first, their app access last: enabling it
	// requests their shard builds, which then see all the demo data (and
	// a transaction's reference needs its account to exist).
	var enable []demoChange
	for i, a := range demoAccounts {
		practices := []string{"pr-mitte", "pr-see"}
		if a.Role == "member" {
			practices = []string{[]string{"pr-mitte", "pr-see"}[i%2]}
		}
		cs = append([]demoChange{{Entity: "accounts", Op: "upsert", ID: a.ID, Fields: map[string]any{
			"name": a.Name, "email": a.Email, "role": a.Role, "practice_ids": practices}}}, cs...)
		enable = append(enable, demoChange{Entity: "accounts", Op: "upsert", ID: a.ID, Fields: map[string]any{"app_enabled": a.ID != "acc-mehmet"}})
	}
	cs = append(cs, enable...)
	var out [][]demoChange
	for len(cs) > 0 {
		n := min(batchSize, len(cs))
		out = append(out, cs[:n])
		cs = cs[n:]
	}
	return out
}
