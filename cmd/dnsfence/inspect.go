package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sort"

	"github.com/dnsfence/dnsfence/resolver"
)

// runCheck loads everything as serve would, prints a summary and exits
// non-zero on any error, bad list lines included.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsfence check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	snap, err := resolver.BuildSnapshot(cfg, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "config %s\n", cfg.File)
	fmt.Fprintf(stdout, "listen %v, upstreams %v\n", cfg.Listen, snap.Forwarder.Upstreams())
	for _, p := range cfg.Policies {
		fmt.Fprintf(stdout, "policy %q action %s\n", p.Name, p.Action)
		for _, c := range p.Clients {
			fmt.Fprintf(stdout, "  client range %s\n", c)
		}
		for _, f := range p.ClientFiles {
			rf := snap.Ranges[cfg.Path(f)]
			fmt.Fprintf(stdout, "  client file %s: %d ranges\n", cfg.Path(f), len(rf.Ranges))
		}
		for _, f := range p.Block {
			fmt.Fprintf(stdout, "  block %s: %d entries\n", cfg.Path(f), snap.Lists[cfg.Path(f)].Len())
		}
		for _, f := range p.Allow {
			fmt.Fprintf(stdout, "  allow %s: %d entries\n", cfg.Path(f), snap.Lists[cfg.Path(f)].Len())
		}
	}
	paths := make([]string, 0, len(snap.Lists))
	for p := range snap.Lists {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for _, d := range snap.Lists[p].Duplicates() {
			fmt.Fprintf(stdout, "warning: %s:%d: duplicate entry %q (first on line %d)\n", p, d.Line, d.Name, d.FirstLine)
		}
	}
	if len(snap.Warnings) > 0 {
		for _, w := range snap.Warnings {
			fmt.Fprintln(stderr, w)
		}
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// runExplain prints the decision for one client and name and its reasons.
func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsfence explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: dnsfence explain -config FILE CLIENT_IP NAME")
		return 2
	}
	client, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "client: %v\n", err)
		return 2
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	snap, err := resolver.BuildSnapshot(cfg, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stdout, snap.Explain(client, fs.Arg(1)).String())
	return 0
}
