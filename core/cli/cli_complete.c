/* Shell completion: "headscale completion bash|zsh|fish|powershell" prints a small script
 * that, on each TAB, runs the hidden "headscale __complete WORD... CURRENT"; that prints the
 * subcommands or flags which may follow the words and start with CURRENT, one per line. The
 * command tree is walked here, so the scripts never go stale. */
#include <string.h>

#include "cli/cli_internal.h"

static const char bash_script[] =
    "# bash completion for headscale: source it, or put it in\n"
    "# /etc/bash_completion.d/headscale\n"
    "_headscale() {\n"
    "    local cur=${COMP_WORDS[COMP_CWORD]}\n"
    "    local IFS=$'\\n'\n"
    "    COMPREPLY=($(headscale __complete \"${COMP_WORDS[@]:1:COMP_CWORD-1}\" \"$cur\" "
    "2>/dev/null))\n"
    "}\n"
    "complete -o default -F _headscale headscale\n";

static const char zsh_script[] =
    "#compdef headscale\n"
    "# zsh completion for headscale: put it in a directory of $fpath as _headscale\n"
    "_headscale() {\n"
    "    local -a next\n"
    "    next=(${(f)\"$(headscale __complete ${words[2,CURRENT-1]} \"${words[CURRENT]}\" "
    "2>/dev/null)\"})\n"
    "    compadd -a next\n"
    "}\n"
    "compdef _headscale headscale\n";

static const char fish_script[] =
    "# fish completion for headscale: put it in ~/.config/fish/completions/headscale.fish\n"
    "complete -c headscale -f -a '(headscale __complete (commandline -opc)[2..-1] "
    "(commandline -ct) 2>/dev/null)'\n";

static const char powershell_script[] =
    "# PowerShell completion for headscale: add it to your profile\n"
    "Register-ArgumentCompleter -Native -CommandName headscale -ScriptBlock {\n"
    "    param($word, $ast, $cursor)\n"
    "    $words = @($ast.CommandElements | Select-Object -Skip 1 | ForEach-Object { \"$_\" })\n"
    "    if ($word -eq '') { $words += '' }\n"
    "    headscale __complete @words 2>$null | ForEach-Object {\n"
    "        [System.Management.Automation.CompletionResult]::new($_)\n"
    "    }\n"
    "}\n";

/* The script of the command's name: completion bash → bash_script, ... */
int cli_cmd_completion(struct cli_ctx *ctx)
{
    static const struct {
        const char *shell, *script;
    } scripts[] = { { "bash", bash_script }, { "zsh", zsh_script }, { "fish", fish_script },
                    { "powershell", powershell_script } };
    const char *shell = cli_args_cmd(&ctx->args)->name;

    for (size_t i = 0; i < HS_ARRAY_LEN(scripts); i++)
        if (strcmp(scripts[i].shell, shell) == 0)
            return fputs(scripts[i].script, ctx->out) < 0;
    return cli_fail(ctx, "no completion script for %s", shell);
}

/* Prints prefix+word when it starts with cur. */
static void print_match(FILE *out, const char *prefix, const char *word, const char *cur)
{
    char full[128];

    snprintf(full, sizeof(full), "%s%s", prefix, word);
    if (strncmp(full, cur, strlen(cur)) == 0)
        fprintf(out, "%s\n", full);
}

static void flag_matches(FILE *out, const struct cli_flag *fl, const char *cur)
{
    for (const struct cli_flag *f = fl; f && f->name; f++)
        if (!f->hidden)
            print_match(out, "--", f->name, cur);
}

int cli_complete(int nwords, char **words, FILE *out)
{
    char *argv[CLI_MAX_POSITIONAL + CLI_MAX_FLAGS + 1];
    const char *cur = nwords > 0 ? words[nwords - 1] : "";
    const struct cli_cmd *c;
    struct cli_args a;
    int argc = 0;

    argv[argc++] = "headscale";
    for (int i = 0; i + 1 < nwords && argc < (int)HS_ARRAY_LEN(argv); i++)
        argv[argc++] = words[i];
    /* A parse error (a missing argument, a flag not known here) still leaves the command
     * path the words name, and that is all completion needs. */
    (void)cli_parse(&cli_root, argc, argv, &a);
    c = cli_args_cmd(&a);
    if (cur[0] == '-') {
        print_match(out, "--", "help", cur);
        flag_matches(out, c->flags, cur);
        for (size_t i = 0; i < a.depth; i++)
            flag_matches(out, a.path[i]->pflags, cur);
        return 0;
    }
    for (const struct cli_cmd *const *s = c->subs; s && *s; s++)
        print_match(out, "", (*s)->name, cur);
    return 0;
}
