package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

const personalitiesUsage = `Usage: backlog personalities [--json] [NAME...]

Lists every system's listen() rules: how a requested backlog is stored, how
many connections can wait, what a connection meets when the queue is full,
and what listen() again does. With NAMEs, shows those systems in full,
with their sources and parameters, and where following them at the SYN on
the Linux kernel (backlog shape) differs from the real system.

  --json   print a JSON array, one object per personality
`

// resolve turns --personality values into personalities; none, or "all",
// means every one.
func resolve(cmd string, names []string) ([]backlog.Personality, error) {
	if len(names) == 0 {
		return backlog.All(), nil
	}
	var ps []backlog.Personality
	for _, n := range names {
		if strings.EqualFold(n, "all") {
			ps = append(ps, backlog.All()...)
			continue
		}
		p, err := backlog.Lookup(n)
		if errors.Is(err, backlog.ErrUnknownPersonality) {
			return nil, usagef(cmd, "unknown personality %q; valid: all, %s", n, strings.Join(backlog.Names(), ", "))
		}
		if err != nil {
			return nil, usagef(cmd, "%v", err)
		}
		ps = append(ps, p)
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
		ClientSYN: scheduleOf(p.ClientSYN), SYNACK: scheduleOf(p.SYNACK),
		Parameters: params, Sources: p.Sources, Notes: p.Notes,
		AtSYNOnLinux: kernel.ShapeDifferences(p),
	}
}

func runPersonalities(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("personalities", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	names, err := parseFlags(e, fs, personalitiesUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	ps, err := resolve("personalities", names)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]personalityJSON, len(ps))
		for i, p := range ps {
			out[i] = describe(p)
		}
		return writeJSON(e, out)
	}
	if len(names) > 0 {
		for i, p := range ps {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			printDetail(e, p)
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLAMP\tCAN WAIT\tHALF-OPEN\tWHEN FULL\tFINAL ACK\tLISTEN AGAIN\tCLIENT GIVES UP")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p, p.Clamp, p.Capacity, p.HalfOpenString(),
			p.FullVerdict(), finalACKRule(p), p.Relisten, seconds(p.ClientSYN.GiveUp))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "\nN is the stored backlog. \"backlog personalities NAME\" shows one system in full, with its sources.")
	return nil
}

func printDetail(e *env, p backlog.Personality) {
	d := describe(p)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
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
	tw.Flush()
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

// helpIsNotAnError turns the flag.ErrHelp of -h, after usage was printed,
// into success.
func helpIsNotAnError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
