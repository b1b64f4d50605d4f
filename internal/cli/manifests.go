package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/manifests"
)

func newManifestsCmd() *cobra.Command {
	dataDir := datadir.Default
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "Store, list and remove the manifest files the cluster keeps applied",
		Long: `Manifest files the servers keep applied: add a file and its objects are
created (server-side apply), edit it and the objects it no longer holds are
deleted, remove it and everything it created is deleted. An object annotated
` + manifests.KeepAnnotation + `: "true" is never deleted this way.

Files are stored in the datastore (ConfigMaps in kube-system), so every
server sees the same set and one applies it. Besides this command, each
server mirrors its directory <data-dir>/server/manifests/ (*.yaml,
*.yml, *.json): drop a file there, edit or delete it; a marker NAME.skip
leaves NAME alone (not applied, nothing pruned).

Errors are events on the file's ConfigMap, naming file, line and reason:
  cloudless kubectl -n kube-system get events --field-selector involvedObject.name=<ConfigMap>
Run on a server; it uses <data-dir>/server/cred/admin.kubeconfig.`,
	}
	var output string
	var skip bool
	client := func(cmd *cobra.Command) (kubernetes.Interface, error) {
		if err := configure(cmd, false); err != nil {
			return nil, err
		}
		c, _, err := adminClient(dataDir)
		return c, err
	}
	put := &cobra.Command{
		Use:   "put FILE...",
		Short: "Store manifest files (by base name; an existing one is replaced)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			for _, a := range args {
				data, err := os.ReadFile(a)
				if err != nil {
					return err
				}
				if len(data) > manifests.MaxSize {
					return fmt.Errorf("%s is %d KiB, over the %d KiB limit of a manifest file: split it", a, len(data)>>10, manifests.MaxSize>>10)
				}
				name := filepath.Base(a)
				if err := manifests.Put(cmd.Context(), c, name, data, manifests.SourceCLI, skip); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stored %s (ConfigMap %s/%s)\n", name, manifests.Namespace, manifests.ConfigMapName(name))
			}
			return nil
		},
	}
	put.Flags().BoolVar(&skip, "skip", false, "store it but leave it alone (not applied, nothing pruned), as a NAME.skip marker does")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the stored manifest files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			files, err := manifests.List(cmd.Context(), c)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				if files == nil {
					files = []manifests.File{}
				}
				return writeJSON(cmd.OutOrStdout(), files)
			case "table", "":
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSOURCE\tBYTES\tSTATE\tCONFIGMAP")
				for _, f := range files {
					state := "applied"
					switch {
					case f.Error != "":
						state = "refused: " + f.Error
					case f.Skip:
						state = "skipped"
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", f.Name, f.Source, f.Size, state, f.ConfigMap)
				}
				return w.Flush()
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	ls.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove manifest files; what they created is deleted",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			for _, a := range args {
				if err := manifests.Remove(cmd.Context(), c, a); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s; its objects are being deleted\n", a)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{put, ls, rm} {
		addConfigFlag(c)
		datadir.AddFlag(c.Flags(), &dataDir, "")
		cmd.AddCommand(c)
	}
	return cmd
}
