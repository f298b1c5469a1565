/*
 * options.h - the command-line option parser every tome program uses.
 *
 * A program describes its options once, in a table of tome_option rows:
 * the name, the value's type and range, where the value goes and one line
 * of help.  The parser fills the caller's variables from argv, checks each
 * value against its type and range, and names the option in every error
 * ("--chunk: \"12x\" is not a whole number"); `--help` text is generated
 * from the same table, so the two cannot disagree.
 *
 * Syntax, as people expect from GNU tools: `--name VALUE`, `--name=VALUE`,
 * `-x VALUE`, `-xVALUE`, flags as `--name` or `-x`; operands may stand
 * between options; `--` ends the options.  The parser keeps no state
 * between calls and never prints or exits: the program decides what a
 * usage error costs.
 *
 * A program with commands (`tome ask CORPUS QUESTION --think`) puts the
 * options of its commands in a second table.  They too are accepted
 * anywhere on the line, since the command may come after them; the parser
 * notes which rows were given, and tome_options_scope then refuses those
 * the command does not take, once the program knows the command.
 */
#ifndef TOME_COMMON_OPTIONS_H
#define TOME_COMMON_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"

typedef enum tome_option_kind {
    TOME_OPT_FLAG,   /* no value; stores .flag_value in an int */
    TOME_OPT_STRING, /* stores the argument (a pointer into argv) in a const char * */
    TOME_OPT_INT,    /* a whole number in [.min, .max], stored in an integer of .size bytes */
    TOME_OPT_SIZE,   /* a count of bytes or items, K/M/G/T suffixes (powers of 1024)
                        allowed, in [.min, .max], stored like TOME_OPT_INT */
    TOME_OPT_REAL,   /* a finite number in [.min, .max], stored in a double */
    TOME_OPT_CHOICE, /* one of the '|'-separated words in .choices; its index in an int */
    TOME_OPT_CALL    /* hands the argument (NULL when .arg is NULL: a flag) and .data to
                        .call: repeatable options, lists, settings kept elsewhere */
} tome_option_kind;

typedef struct tome_option {
    const char *name; /* long name, without the dashes */
    char short_name;  /* 0: none */
    tome_option_kind kind;
    const char *arg;     /* the value's name in --help ("N", "FILE"); NULL for flags */
    const char *help;    /* one line; more lines with '\n' */
    void *value;         /* where the value goes (not for TOME_OPT_CALL) */
    size_t size;         /* TOME_OPT_INT/SIZE: sizeof the target (1, 2, 4 or 8) */
    int64_t min, max;    /* TOME_OPT_INT/SIZE/REAL: inclusive range */
    int is_unsigned;     /* TOME_OPT_INT/SIZE: the target is unsigned (max may be -1: all) */
    int flag_value;      /* TOME_OPT_FLAG: the value stored (0 is read as 1) */
    const char *choices; /* TOME_OPT_CHOICE */
    int (*call)(void *ctx, const void *data, const char *arg, tome_error *err); /* TOME_OPT_CALL */
    const void *data; /* TOME_OPT_CALL: handed to .call */
    int optional;     /* TOME_OPT_CALL with .arg: the value may be left out (.call gets
                         NULL); it comes only as --name=VALUE, so that a bare --name
                         never swallows the operand after it */
} tome_option;

/* Row builders for the common cases; `target` is an lvalue. */
#define TOME_FLAG(nm, sh, target, text)                                                            \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_FLAG, .help = text, .value = &(target)      \
    }
#define TOME_STRING(nm, sh, argname, target, text)                                                 \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_STRING, .arg = argname, .help = text,       \
        .value = &(target)                                                                         \
    }
#define TOME_INT(nm, sh, argname, target, lo, hi, text)                                            \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_INT, .arg = argname, .help = text,          \
        .value = &(target), .size = sizeof(target), .min = lo, .max = hi                           \
    }
#define TOME_UINT(nm, sh, argname, target, lo, hi, text)                                           \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_INT, .arg = argname, .help = text,          \
        .value = &(target), .size = sizeof(target), .min = lo, .max = hi, .is_unsigned = 1         \
    }
#define TOME_SIZE(nm, sh, argname, target, lo, hi, text)                                           \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_SIZE, .arg = argname, .help = text,         \
        .value = &(target), .size = sizeof(target), .min = lo, .max = hi, .is_unsigned = 1         \
    }
#define TOME_REAL(nm, sh, argname, target, lo, hi, text)                                           \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_REAL, .arg = argname, .help = text,         \
        .value = &(target), .size = sizeof(double), .min = lo, .max = hi                           \
    }
#define TOME_CHOICE(nm, sh, words, target, text)                                                   \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_CHOICE, .arg = words, .help = text,         \
        .value = &(target), .choices = words                                                       \
    }
#define TOME_CALL(nm, sh, argname, fn, datum, text)                                                \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_CALL, .arg = argname, .help = text,         \
        .call = fn, .data = datum                                                                  \
    }
#define TOME_CALL_OPTIONAL(nm, sh, argname, fn, datum, text)                                       \
    {                                                                                              \
        .name = nm, .short_name = sh, .kind = TOME_OPT_CALL, .arg = argname, .help = text,         \
        .call = fn, .data = datum, .optional = 1                                                   \
    }

/* A program's command line: its name, the usage lines after "usage: ",
 * its options, and, for a program with commands, the commands' options.
 * `--help`/`-h` is understood without a row (a row of that name wins). */
typedef struct tome_cli {
    const char *program;
    const char *usage; /* e.g. "--model DIR (--ids FILE | --text TEXT) [options]" */
    const tome_option *options;
    size_t n_options;
    const tome_option *command_options; /* see tome_options_scope; may be NULL */
    size_t n_command_options;
} tome_cli;

/* TOME_OPTIONS_HELP: returned by tome_options_parse when --help was given. */
#define TOME_OPTIONS_HELP 1

/* Parse argv[1..argc) against `cli`, storing values as the rows say (the
 * caller sets defaults first).  The operands, in order, are moved to
 * argv[1..*n_operands], the options after them (the array is reordered,
 * never the strings).
 * `ctx` is passed to TOME_OPT_CALL rows.  Returns 0, TOME_OPTIONS_HELP,
 * or TOME_EINVAL with a message naming the option and the problem. */
int tome_options_parse(const tome_cli *cli, int argc, char **argv, void *ctx, int *n_operands,
                       tome_error *err);

/* tome_options_parse that also sets seen[i] to 1 for each row given, the
 * rows counted through .options and then .command_options (seen has
 * n_options + n_command_options entries, cleared by the caller). */
int tome_options_parse_seen(const tome_cli *cli, int argc, char **argv, void *ctx, int *n_operands,
                            unsigned char *seen, tome_error *err);

/* Whether `name` is one of the space-separated words of `list`. */
int tome_options_listed(const char *list, const char *name);

/* Refuse the command options given (`seen`, as tome_options_parse_seen
 * set it) that `takes`, the command's space-separated list of option
 * names, does not name: TOME_EINVAL with "option --NAME does not apply to
 * 'COMMAND'", else 0. */
int tome_options_scope(const tome_cli *cli, const unsigned char *seen, const char *takes,
                       const char *command, tome_error *err);

/* A program's own rules over its parsed values and operands
 * (argv[1..n_operands]): 0, or TOME_EINVAL with a message. */
typedef int (*tome_options_check)(void *ctx, int n_operands, char **argv, tome_error *err);

/* A tome_options_check for programs that take options only: TOME_EINVAL
 * with "unexpected argument: ARG" for the first operand. */
int tome_options_no_operands(void *ctx, int n_operands, char **argv, tome_error *err);

/* The start every tome program shares: parse argv (as tome_options_parse),
 * then `check` (may be NULL).  --help prints the help on stdout and asks
 * for exit status 0; an error prints "PROGRAM: MESSAGE (see PROGRAM
 * --help)" on stderr and asks for `usage_status`.  Returns 1 with *status
 * set when the program should exit now, 0 to go on. */
int tome_options_start(const tome_cli *cli, int argc, char **argv, void *ctx,
                       tome_options_check check, int usage_status, int *n_operands, int *status);

/* Write "usage: PROGRAM USAGE" and one aligned line per option. */
void tome_options_help(const tome_cli *cli, FILE *out);

/* One aligned help line per row of rows[0..n) that `only` (a space-
 * separated list of names; NULL: every row) names. */
void tome_options_help_rows(const tome_option *rows, size_t n, const char *only, FILE *out);

#endif
