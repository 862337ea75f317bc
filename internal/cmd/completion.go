package cmd

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// bashCompletion asks the binary itself for candidates (urfave/cli's --generate-bash-completion).
const bashCompletion = `# batchgpt bash completion: source <(batchgpt completion bash)
_batchgpt_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$( "${COMP_WORDS[@]:0:$COMP_CWORD}" "${cur}" --generate-bash-completion 2>/dev/null )
  else
    opts=$( "${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null )
  fi
  COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
  return 0
}
complete -o bashdefault -o default -F _batchgpt_complete batchgpt
`

func (e *env) completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, or zsh through bashcompinit)",
		ArgsUsage: "bash|zsh",
		Description: "Examples:\n   source <(batchgpt completion bash)\n" +
			"   batchgpt completion bash > /etc/bash_completion.d/batchgpt",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash", "":
				fmt.Fprint(e.stdout, bashCompletion)
			case "zsh":
				fmt.Fprint(e.stdout, "autoload -U +X bashcompinit && bashcompinit\n"+bashCompletion)
			default:
				return usagef("completion: want bash or zsh, not %q", c.Args().First())
			}
			return nil
		},
	}
}
