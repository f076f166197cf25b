package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver"
	"github.com/miekg/dns"
)

// loadSnapshot loads the configuration and everything it names, as serve
// does at startup.
func loadSnapshot(configPath string) (*resolver.Snapshot, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	return resolver.BuildSnapshot(cfg, nil)
}

// runCheck loads everything as serve would, prints the policies, ranges and
// list sizes and every likely mistake, and exits 1 on any error (bad list
// lines included), each as file:line: reason.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsfence check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	snap, err := loadSnapshot(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cfg := snap.Config
	fmt.Fprintf(stdout, "config %s\n", cfg.File)
	fmt.Fprintf(stdout, "listen %s\n", strings.Join(cfg.Listen, " "))
	fmt.Fprintf(stdout, "upstreams %s\n", strings.Join(snap.Forwarder.Upstreams(), " "))
	fmt.Fprintf(stdout, "allowed_clients %s\n", strings.Join(cfg.AllowedClients, " "))
	for _, p := range cfg.Policies {
		fmt.Fprintf(stdout, "policy %q action %s\n", p.Name, p.Action)
		for _, cr := range snap.PolicyTable().AllSorted() {
			if cr.Policy.Name == p.Name {
				fmt.Fprintf(stdout, "  range %s (%s:%d)\n", cr.Range.Prefix, cr.Range.File, cr.Range.Line)
			}
		}
		for _, f := range p.Block {
			l := snap.Lists[cfg.Path(f)]
			fmt.Fprintf(stdout, "  block %s: %d entries, sha256 %s\n", l.File(), l.Len(), l.Hash()[:16])
		}
		for _, f := range p.Allow {
			l := snap.Lists[cfg.Path(f)]
			fmt.Fprintf(stdout, "  allow %s: %d entries, sha256 %s\n", l.File(), l.Len(), l.Hash()[:16])
		}
		if len(p.Block) == 0 {
			fmt.Fprintln(stdout, "  no block lists: an exemption")
		}
	}
	warnings := snap.Lint()
	for _, w := range warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	for _, w := range snap.Warnings {
		fmt.Fprintln(stderr, w)
	}
	errors := 0
	for _, w := range snap.Warnings {
		errors += strings.Count(w.Error(), "\n") + 1
	}
	fmt.Fprintf(stdout, "%d warnings, %d errors\n", len(warnings), errors)
	if errors > 0 {
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// runExplain prints the decision for one client and name and every reason.
func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsfence explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	resolve := fs.Bool("resolve", false, "also ask the upstreams and explain the answer's CNAME/DNAME chain hop by hop")
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dnsfence explain [-config FILE] [-resolve] [-json] CLIENT_IP NAME [TYPE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		fs.Usage()
		return 2
	}
	client, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "client: %v\n", err)
		return 2
	}
	qtype := dns.TypeA
	if fs.NArg() == 3 {
		t, ok := dns.StringToType[strings.ToUpper(fs.Arg(2))]
		if !ok {
			fmt.Fprintf(stderr, "type: unknown query type %q\n", fs.Arg(2))
			return 2
		}
		qtype = t
	}
	// A name typed in Unicode is asked in DNS, and listed, in its ASCII
	// form: convert it as the lists convert their entries.
	name, err := blocklist.ToASCII(fs.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "name: %v\n", err)
		return 2
	}
	snap, err := loadSnapshot(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	e := snap.Explain(client, name, qtype)
	if name != fs.Arg(1) {
		e.Typed = fs.Arg(1)
	}
	if *resolve && (e.Verdict == resolver.VerdictForwarded || e.Verdict == resolver.VerdictAllowed) {
		req := new(dns.Msg)
		req.SetQuestion(e.Name, qtype)
		resp, _, err := snap.Forwarder.Forward(context.Background(), req, false, nil)
		if err != nil {
			fmt.Fprintf(stderr, "resolve: %v\n", err)
			return 1
		}
		snap.ExplainAnswer(&e, resp)
	}
	if *asJSON {
		out, err := json.MarshalIndent(e, "", "  ")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	fmt.Fprint(stdout, e.String())
	return 0
}
