package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/lint"
)

func newLintCmd() *cobra.Command {
	var output, failOn string
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

A document that does not parse is reported with its file and line and the
rest are still checked; kinds no check knows (CRDs) are skipped.
Silence a finding on one object with the annotation
  cloudless.dev/lint-ignore: "CL-NET-001: clients are behind a proxy anyway"
(the reason is required).

Exit code: 0 clean (or below --fail-on), 1 findings at or above --fail-on,
2 errors.`,
		Example: `  cloudless lint deploy/
  kustomize build overlays/prod | cloudless lint - -o sarif > lint.sarif
  cloudless lint --fail-on warning app.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail, err := lint.ParseSeverity(failOn)
			if err != nil {
				return fmt.Errorf("--fail-on: %w", err)
			}
			objs, notes, err := lint.Load(args, cmd.InOrStdin())
			if err != nil {
				return err
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
	return cmd
}
