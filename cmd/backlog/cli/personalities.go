package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// lookupPersonalities reads one name given for a system: "all", or a
// name or alias with parameters ("linux:somaxconn=128"). An unknown name
// gets the names it comes close to, aliases included, as suggestions.
func lookupPersonalities(name string) ([]backlog.Personality, error) {
	if strings.EqualFold(strings.TrimSpace(name), "all") {
		return backlog.All(), nil
	}
	p, err := backlog.Lookup(name)
	if errors.Is(err, backlog.ErrUnknownPersonality) {
		base, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(name)), ":")
		if near := nearNames(base); len(near) > 0 {
			return nil, fmt.Errorf("no such system; did you mean %s? (backlog personalities lists them all)", orList(near))
		}
		return nil, fmt.Errorf("no such system; give all or one of %s", strings.Join(backlog.Names(), ", "))
	}
	if err != nil {
		return nil, err
	}
	return []backlog.Personality{p}, nil
}

// nearNames returns the systems whose name or an alias comes close to s:
// one begins with the other, or one is within an edit of the other (two
// for names longer than five letters).
// Each reads "darwin (macos)" when an alias was the close one.
func nearNames(s string) []string {
	var out []string
	for _, p := range backlog.All() {
		for i, cand := range append([]string{p.Name}, p.Aliases...) {
			if !near(s, cand) {
				continue
			}
			if i == 0 {
				out = append(out, p.Name)
			} else {
				out = append(out, p.Name+" ("+cand+")")
			}
			break
		}
	}
	return out
}

func near(s, cand string) bool {
	if len(s) < 2 {
		return false
	}
	if strings.HasPrefix(cand, s) || (len(cand) >= 3 && strings.HasPrefix(s, cand)) {
		return true
	}
	limit := 1
	if len(s) > 5 {
		limit = 2
	}
	return len(s) >= 3 && editDistance(s, cand) <= limit
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// resolve looks up names given as arguments (personalities NAME...): each
// once, in order; none means every system.
func resolve(cmd string, names []string) ([]backlog.Personality, error) {
	if len(names) == 0 {
		return backlog.All(), nil
	}
	var ps []backlog.Personality
	for _, n := range names {
		got, err := lookupPersonalities(n)
		if err != nil {
			return nil, usagef(cmd, "%q: %v", n, err)
		}
		for _, p := range got {
			if !containsPersonality(ps, p) {
				ps = append(ps, p)
			}
		}
	}
	return ps, nil
}

// scheduleJSON is a Schedule in seconds.
type scheduleJSON struct {
	Retransmit []float64 `json:"retransmit_s"`
	GiveUp     float64   `json:"give_up_s"`
}

func scheduleOf(s backlog.Schedule) scheduleJSON {
	out := scheduleJSON{Retransmit: []float64{}, GiveUp: s.GiveUp.Seconds()}
	for _, d := range s.At {
		out.Retransmit = append(out.Retransmit, d.Seconds())
	}
	return out
}

type personalityJSON struct {
	Name           string       `json:"name"`
	Params         string       `json:"params,omitempty"`
	Aliases        []string     `json:"aliases"`
	System         string       `json:"system"`
	Clamp          string       `json:"clamp"`
	SOMAXCONN      int          `json:"somaxconn"`
	Maximum        int          `json:"maximum"`
	Capacity       string       `json:"capacity"`
	HalfOpen       string       `json:"half_open"`
	OnFull         string       `json:"on_full"`
	OnSYNFull      string       `json:"on_syn_full"`
	OnFinalACKFull string       `json:"on_final_ack_full"`
	Relisten       string       `json:"relisten"`
	KB295079Defect bool         `json:"kb295079_defect"`
	SlotsNeedFDs   bool         `json:"slots_need_descriptors"`
	ClientSYN      scheduleJSON `json:"client_syn"`
	SYNACK         scheduleJSON `json:"syn_ack"`
	OnRepeatSYN    string       `json:"on_repeated_syn"`
	PrunesOld      bool         `json:"prunes_old_half_open"`
	Parameters     []string     `json:"parameters"`
	Sources        []string     `json:"sources"`
	Notes          string       `json:"notes,omitempty"`
	AtSYNOnLinux   []string     `json:"at_syn_on_linux"`
}

func describe(p backlog.Personality) personalityJSON {
	params := backlog.Params(p.Name)
	if params == nil {
		params = []string{}
	}
	aliases := p.Aliases
	if aliases == nil {
		aliases = []string{}
	}
	return personalityJSON{
		Name: p.Name, Params: p.Params, Aliases: aliases, System: p.System,
		Clamp: p.Clamp.String(), SOMAXCONN: p.SOMAXCONN, Maximum: p.Maximum(),
		Capacity: p.Capacity.String(), HalfOpen: p.HalfOpenString(),
		OnFull: p.FullVerdict(), OnSYNFull: p.OnFull.String(), OnFinalACKFull: finalACKRule(p),
		Relisten: p.Relisten.String(), KB295079Defect: p.DeferredSlotReturn, SlotsNeedFDs: p.SlotsNeedDescriptors,
		ClientSYN: scheduleOf(p.ClientSYN), SYNACK: scheduleOf(p.SYNACK), OnRepeatSYN: p.OnRepeatSYN.String(), PrunesOld: p.HalfOpen.PruneOld,
		Parameters: params, Sources: p.Sources, Notes: p.Notes,
		AtSYNOnLinux: kernel.ShapeDifferences(p),
	}
}

func personalitiesCommand() (*flags, runFunc) {
	f := newFlags("personalities", "[flags] [NAME...]", `
Lists every system's listen() rules: how a requested backlog is stored, how
many connections can wait, what a connection meets when the queue is full,
and what listen() again does. With NAMEs, shows those systems in full, with
their sources and parameters, and where following them at the SYN on the
Linux kernel (backlog shape) differs from the real system.`)
	var asJSON bool
	f.switchFlag(&asJSON, "json", "print a JSON array, one object per personality")
	return f, func(_ context.Context, e *env, names []string) error {
		ps, err := resolve("personalities", names)
		if err != nil {
			return err
		}
		return personalities(e, ps, len(names) > 0, asJSON)
	}
}

func personalities(e *env, ps []backlog.Personality, detail, asJSON bool) error {
	if asJSON {
		out := make([]personalityJSON, len(ps))
		for i, p := range ps {
			out[i] = describe(p)
		}
		return writeJSON(e, out)
	}
	if detail {
		for i, p := range ps {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			printDetail(e, p)
		}
		return nil
	}
	width := outputWidth(e.stdout)
	t := &table{cards: true, cols: []column{{name: "NAME"}, {name: "CLAMP", wrap: true, min: 12}, {name: "CAN WAIT"},
		{name: "HALF-OPEN", wrap: true, min: 9}, {name: "WHEN FULL"}, {name: "FINAL ACK"}, {name: "LISTEN AGAIN", wrap: true, min: 9},
		{name: "CLIENT GIVES UP"}}}
	for _, p := range ps {
		t.add(p.String(), p.Clamp.String(), p.Capacity.String(), p.HalfOpenString(), p.FullVerdict(), finalACKRule(p),
			p.Relisten.String(), seconds(p.ClientSYN.GiveUp))
	}
	t.write(e.stdout, width)
	fmt.Fprintln(e.stdout)
	para(e.stdout, width, "", `N is the stored backlog. "backlog personalities NAME" shows one system in full, with its sources.`)
	return nil
}

func printDetail(e *env, p backlog.Personality) {
	d := describe(p)
	t := &table{cols: []column{{name: ""}, {name: "", wrap: true, min: 20}}}
	row := func(k, v string) { t.add(k, v) }
	row("name", p.String())
	row("system", p.System)
	if len(p.Aliases) > 0 {
		row("aliases", strings.Join(p.Aliases, ", "))
	}
	row("clamp", d.Clamp)
	row("SOMAXCONN", fmt.Sprintf("%d, stored as %d", p.SOMAXCONN, p.Stored(p.SOMAXCONN)))
	row("can wait", d.Capacity)
	row("half-open", d.HalfOpen)
	row("SYN when full", d.OnSYNFull)
	row("final ACK when full", d.OnFinalACKFull)
	row("listen() again", d.Relisten)
	if p.DeferredSlotReturn {
		row("defect", "KB 295079: a slot freed by accept() returns only when the accepting thread yields")
	}
	if p.SlotsNeedDescriptors {
		row("descriptors", "slots need descriptors; a later listen() or accept() refills the queue")
	}
	row("client SYN", p.ClientSYN.String())
	row("SYN-ACK", p.SYNACK.String())
	if p.HalfOpen.PruneOld {
		row("old half-open", "fewer SYN-ACKs, down to 2, past half of max(8, N) waiting")
	}
	row("repeated SYN", d.OnRepeatSYN)
	for _, diff := range d.AtSYNOnLinux {
		row("at the SYN on Linux", diff)
	}
	for _, param := range d.Parameters {
		row("parameter", param)
	}
	for _, s := range p.Sources {
		row("source", s)
	}
	if p.Notes != "" {
		row("note", p.Notes)
	}
	lines, _ := t.render(outputWidth(e.stdout))
	for _, l := range lines[1:] { // no header
		fmt.Fprintln(e.stdout, l)
	}
}

// finalACKRule is what a final ACK meets on a full queue, or "n/a" where
// half-open connections hold their slot from the SYN, so it never overflows.
func finalACKRule(p backlog.Personality) string {
	if p.HalfOpen.Shared {
		return "n/a"
	}
	return p.OnACKFull.String()
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%gs", d.Seconds())
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
