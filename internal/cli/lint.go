package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/lint"
)

func newLintCmd() *cobra.Command {
	var output, failOn string
	var skipUnparseable bool
	cmd := &cobra.Command{
		Use:   "lint FILE|DIR|-...",
		Short: "Check manifests for on-prem foot-guns, without a cluster",
		Long: `Check Kubernetes manifests (YAML or JSON, multi-document, directories walked,
- for stdin, e.g. kustomize build . | cloudless lint -) for what goes wrong on
your own metal: ndots amplification, client addresses lost to
externalTrafficPolicy, pods no NetworkPolicy covers, StatefulSet volumes
left behind, HPA and VPA fighting, native sidecars without probes, root and
privilege escalation, BestEffort workloads, latest tags, removed API
versions, Services selecting nothing. Every check: docs/doctor.md.

Input that is not a Kubernetes object (binary data, broken YAML or JSON, a
document without apiVersion and kind) is an error naming the file and line
(exit 2); with --skip-unparseable it is a note instead and the rest is still
checked. Kinds no check knows (CRDs) are skipped with a note.
Silence a finding on one object with the annotation
  cloudless.dev/lint-ignore: "CL-NET-001: clients are behind a proxy anyway"
(the reason is required).

Exit codes:
  0  clean, or only findings below --fail-on
  1  findings at or above --fail-on (and below error)
  2  findings of severity error; input that cannot be parsed (unless
     --skip-unparseable); a file that does not exist or cannot be read;
     a bad flag`,
		Example: `  cloudless lint deploy/
  kustomize build overlays/prod | cloudless lint - -o sarif > lint.sarif
  cloudless lint --fail-on warning app.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return lintError(cmd, fmt.Errorf("lint: no input: give a manifest file, a directory of them, or - for stdin"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fail, err := lint.ParseSeverity(failOn)
			if err != nil {
				return lintError(cmd, fmt.Errorf("--fail-on: %w", err))
			}
			if err := lint.CheckFormat(output); err != nil {
				return lintError(cmd, fmt.Errorf("-o: %w", err))
			}
			objs, notes, err := lint.Load(args, cmd.InOrStdin())
			if err != nil {
				return lintError(cmd, fmt.Errorf("lint: %w", err))
			}
			if errs := lint.Unparseable(notes); len(errs) > 0 && !skipUnparseable {
				for _, err := range errs {
					fmt.Fprintf(cmd.ErrOrStderr(), "error: %v\n", err)
				}
				return exitCode(lint.ExitError)
			}
			for _, o := range objs {
				if !lint.Known(o) {
					notes = append(notes, lint.Note{File: o.File, Line: o.Line, Message: "skipped " + o.Kind + " " + o.Name + ": no check knows this kind"})
				}
			}
			findings := lint.Run(objs)
			if err := (lint.Report{Findings: findings, Notes: notes}).Write(cmd.OutOrStdout(), output, "cloudless lint"); err != nil {
				return err
			}
			if code := lint.ExitCode(findings, fail); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, json or sarif")
	cmd.Flags().StringVar(&failOn, "fail-on", "error", "lowest severity that fails with exit code 1: info, warning or error (errors always exit 2)")
	cmd.Flags().BoolVar(&skipUnparseable, "skip-unparseable", false, "report input that is not a Kubernetes object as a note and check the rest, instead of failing with exit code 2")
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return lintError(cmd, err) })
	return cmd
}

// lintError prints err as one line and ends lint with lint.ExitError.
func lintError(cmd *cobra.Command, err error) error {
	fmt.Fprintf(cmd.ErrOrStderr(), "error: %v\n", err)
	return exitCode(lint.ExitError)
}
