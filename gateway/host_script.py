"""The POSIX sh script that places a push on an ssh-mode host, one phase a call
(gateway.placing runs it and words what it says)."""

SCRIPT = r"""
# Placing a push on an ssh-mode host (gateway.placing runs it with /bin/sh, one phase a call).
# POSIX sh and the host's coreutils, GNU find and GNU tar; it says what it finds in tab-separated
# lines (code, fields), "E" and a reason code when it refuses, and the gateway words it.
#
# Why a walk: the ssh user may be root, and a local user who can change a folder on the way to
# the target could swap a name for a link between two steps (to /etc/shadow, /etc/cron.d). As
# workers/fdpath.py does with open folders, the shell descends one name at a time with `cd -P`
# and from then on names entries relative to its working folder, which stays the folder it
# checked whatever is renamed meanwhile. Each phase walks again; the upload comes on the place
# phase's stdin, into the private folder that phase holds.
#
# $1 phase (look, keep, place, drop)  $2 kind (file, tree)  $3 target (absolute, normalised)
# $4 1: a folder others can change is allowed  $5 owner ("" none)  $6 temp folder's name
# $7 sha256 of the payload  $8 its size  $9 mode (octal, "" none)  $10 owner of the new file or
# top folder alone (what it inherits from the old one; "" none)
set -u
unset CDPATH
phase=$1 kind=$2 dest=$3 unsafe_ok=$4 owner=$5 tmp=$6 sha=$7 size=$8 mode=$9 top_owner=${10}
me=$(id -u) mygid=$(id -g)
parent=${dest%/*} name=${dest##*/}
umask 077

fail() { printf 'E'; printf '\t%s' "$@"; printf '\n'; exit 2; }
user_of() { n=$(getent passwd "$1" | cut -d: -f1); echo "${n:-uid $1}${n:+ (uid $1)}"; }
group_of() { n=$(getent group "$1" | cut -d: -f1); echo "${n:-gid $1}${n:+ (gid $1)}"; }

# Who, besides root and the ssh user, can add, remove or rename entries in the working folder
# (workers.fdpath.changers). Not covered here: members of root's or the ssh user's own group
# (taken as theirs), and which entries a POSIX ACL names (any ACL is taken as letting others).
changers() {
    set -- $(stat -c '%u %g %a %d' .)
    dev=$4 m=$((0$3)) who=""
    if [ "$1" != 0 ] && [ "$1" != "$me" ]; then who="user $(user_of "$1"), who owns it"
    elif [ $((m & 01000)) != 0 ]; then who=""
    elif [ $((m & 02)) != 0 ]; then who="every user, as it is world-writable"
    elif [ $((m & 020)) != 0 ] && [ "$2" != 0 ] && [ "$2" != "$mygid" ]; then
        who="the members of group $(group_of "$2"), as it is group-writable"
    elif [ "$(ls -ld . | cut -c11)" = "+" ]; then who="whoever its POSIX ACL names"
    fi
}

checked() {  # the working folder, reached as $1
    changers
    if [ -n "$who" ] && [ "$unsafe_ok" != 1 ]; then fail UNSAFE "$1" "$who"; fi
    if [ -n "$below" ] && [ "$dev" != "$below_dev" ]; then
        fail OTHERFS "$1" "$below" "$below_who"
    fi
    if [ -z "$below" ] && [ -n "$who" ]; then below=$1 below_who=$who below_dev=$dev; fi
}

# To the target's folder, from "/": a link is followed only when root (or the ssh user) owns it
# and no folder on the way can be changed by anyone else (fdpath._trusted_link).
walk() {
    cd -P / || fail GONE /
    here="" below="" below_who="" below_dev="" links=0
    checked /
    rest=${parent#/}
    while [ -n "$rest" ]; do
        case $rest in */*) c=${rest%%/*} rest=${rest#*/} ;; *) c=$rest rest="" ;; esac
        case $c in "" | .) continue ;; ..)
            cd -P .. || fail GONE "$here"
            here=$(pwd -P); [ "$here" = / ] && here=""
            continue ;;
        esac
        path="$here/$c"
        if [ -L "$c" ]; then
            [ -z "$below" ] || fail LINK "$path" "below $below, which can be changed by $below_who"
            owner_uid=$(stat -c %u -- "$c") || fail GONE "$path"
            [ "$owner_uid" = 0 ] || [ "$owner_uid" = "$me" ] ||
                fail LINK "$path" "owned by user $(user_of "$owner_uid")"
            links=$((links + 1))
            [ "$links" -le 40 ] || fail LOOP "$dest"
            to=$(readlink -- "$c") || fail GONE "$path"
            case $to in /*) cd -P / || fail GONE /; here="" ;; esac
            rest="$to/$rest"
            continue
        fi
        [ -d "$c" ] || fail NOFOLDER "$path"
        cd -P "./$c" 2>/dev/null || fail NOFOLDER "$path"  # "./": not CDPATH's, nor "-"
        [ "$(pwd -P)" = "$path" ] || fail CHANGED "$path"
        here=$path
        checked "$path"
    done
}

# The owner asked for, as numbers (or "" for a part not asked for).
owner_ids() {
    au="" ag=""
    [ -n "$owner" ] || return 0
    u=${owner%%:*} g=""
    case $owner in *:*) g=${owner#*:} ;; esac
    if [ -n "$u" ]; then au=$(id -u "$u" 2>/dev/null) || fail OWNER "$owner"; fi
    if [ -n "$g" ]; then
        ag=$(getent group "$g" | cut -d: -f3)
        [ -n "$ag" ] || fail OWNER "$owner"
    fi
}

# What is at the target now, for the gateway to tell "already equal" (and what a new copy
# inherits), then a new private folder beside it for the upload.
look() {
    owner_ids
    printf 'P\t%s\t%s\t%s\t%s\t%s\t%s\n' "${here:-/}" "$me" "$mygid" "$au" "$ag" "${below:+1}"
    if [ -L "$name" ]; then fail TARGETLINK "$here/$name"; fi
    if [ "$kind" = file ] && [ -d "$name" ]; then fail ISDIR "$here/$name"; fi
    if [ "$kind" = tree ] && [ -e "$name" ] && [ ! -d "$name" ]; then fail NOTDIR "$here/$name"; fi
    if [ -e "$name" ]; then
        regular=o
        if [ -f "$name" ]; then regular=f; fi
        printf 'O\t%s %s\n' "$(stat -c '%u %g %h %a %s' -- "$name")" "$regular"
        # Below a folder others can change an equal copy is never kept: nothing is read there.
        if [ -z "$below" ] && [ "$kind" = file ] && [ -f "$name" ] &&
            [ "$(stat -c %s -- "$name")" = "$size" ]; then
            printf 'H\t%s\n' "$(sha256sum <"$name" | cut -d' ' -f1)"
        elif [ -z "$below" ] && [ "$kind" = tree ]; then
            (
                cd -P "./$name" && [ "$(pwd -P)" = "$here/$name" ] || exit 0
                # Anything another user owns or can write, and any file with another name, is
                # not kept: a new copy (workers.placing._tree_kept_if_equal). With an owner
                # asked for, anything that is not theirs yet, so nothing is chowned in place.
                if [ -n "$au" ]; then set -- ! -user "$au"; else set -- ! -user 0 ! -user "$me"; fi
                if [ -n "$ag" ]; then set -- "$@" -o ! -group "$ag"; fi
                set -- \( "$@" \) -o \( ! -type l -perm -0002 \) -o \( -type f -links +1 \) \
                    -o \( ! -type l -perm -0020 ! -group 0 ! -group "$mygid" ! -group "${ag:-0}" \)
                x=$(find . -mindepth 1 \( "$@" \) -print | wc -l)
                printf 'X\t%s\n' $((x))
                # Then not kept, and not read: a file there may be a FIFO by the time it is.
                [ $((x)) = 0 ] || exit 0
                find . -type f -exec sha256sum -- {} + | sed 's/^/M\t/'
            )
        fi
    fi
    t=$(mktemp -d "./.$name.cmdb-XXXXXXXXXX" 2>&1) || fail TEMP "${here:-/}" "$t"
    printf 'T\t%s\n' "${t#./}"
}

# Into the private folder, for good: from there the target is "../$name". Only root or the ssh
# user can move a folder of theirs to another parent (that writes its ".."), so whoever renames
# entries beside it can swap its name, never what ".." is, nor what "payload", "new" and "old"
# are inside it: what is renamed in is what was checked, and the old folder goes nowhere else.
enter() {
    cd -P "./$tmp" 2>/dev/null && [ "$(pwd -P)" = "$here/$tmp" ] &&
        [ "$(stat -c '%u %a' .)" = "$me 700" ]
}

# What was uploaded, checked; then the new file or folder made there.
prepared() {
    [ "$(ls -A)" = payload ] && [ -f payload ] && [ ! -L payload ] || fail TEMPSWAP "$here/$tmp"
    got=$(sha256sum <payload | cut -d' ' -f1)
    [ "$got" = "$sha" ] || fail SHA "$got"
    if [ "$kind" = tree ]; then
        mkdir -m 700 new || fail TAR "mkdir failed"
        # No owners from the archive, and the umask's modes; then tarfile's data filter: no
        # set-id, sticky, group or other write bits, always rw (folders rwx) for the owner,
        # executable by group or others only if by the owner.
        err=$( (umask 022 &&
            tar -x -f payload -C new --no-same-owner --no-same-permissions) 2>&1) ||
            fail TAR "$err"
        find new -mindepth 1 ! -type l -exec chmod u+rw,u-s,g-ws,o-wt {} + &&
            find new -mindepth 1 -type d -exec chmod u+x {} + &&
            find new -type f ! -perm -u+x -exec chmod go-x {} + || fail TAR "chmod failed"
        made=new
    else
        made=payload
    fi
    if [ -n "$owner" ]; then
        err=$(chown -R -h -- "$owner" "$made" 2>&1) || fail CHOWN "$owner" "$me" "$err"
    fi
    if [ -n "$top_owner" ]; then
        err=$(chown -h -- "$top_owner" "$made" 2>&1) || fail CHOWN "$top_owner" "$me" "$err"
    fi
    if [ -n "$mode" ]; then chmod -- "$mode" "$made" || fail MODE "$mode"; fi
    stat -c %i "$made"
}

# The new copy renamed in: a file over the old one (atomic); a folder in two renames (the old
# one moved into the private folder, the new one in, so the target is briefly absent; moved
# back if the second fails), the old one then removed with the private folder.
place() {
    if [ -L "$name" ]; then fail TARGETLINK "$here/$name"; fi
    enter && [ -z "$(ls -A)" ] || fail TEMPSWAP "$here/$tmp"
    # The upload, on stdin: written where this shell is, never by a path from "/".
    (set -C && cat >payload) || fail UPLOAD "$here/$tmp/payload"
    inode=$( prepared ) || { printf '%s\n' "$inode"; exit 2; }
    to="../$name"
    if [ "$kind" = file ]; then
        [ ! -d "$to" ] || fail ISDIR "$here/$name"
        mv -f -T -- payload "$to" || fail MOVE "$here/$name"
    elif [ -e "$to" ] || [ -L "$to" ]; then
        [ -d "$to" ] && [ ! -L "$to" ] || fail NOTDIR "$here/$name"
        mv -T -- "$to" old || fail MOVE "$here/$name"
        if ! mv -T -- new "$to"; then
            mv -T -- old "$to"
            fail MOVE "$here/$name"
        fi
    else
        mv -T -- new "$to" || fail MOVE "$here/$name"
    fi
    # Only where others may change the folder (allowed): it was not swapped on the way.
    [ "$(stat -c %i -- "$to")" = "$inode" ] || fail SWAPPED "$here/$name"
    printf 'V\n'
}

# An equal copy kept: only the mode asked for (a tree was kept only with the owner already).
keep() {
    drop
    # Never below a folder others can change (the gateway keeps nothing there either).
    [ -z "$below" ] || fail UNSAFE "$below" "$below_who"
    if [ -L "$name" ]; then fail TARGETLINK "$here/$name"; fi
    if [ "$kind" = file ] && [ -n "$owner" ]; then
        err=$(chown -h -- "$owner" "$name" 2>&1) || fail CHOWN "$owner" "$me" "$err"
    fi
    if [ -n "$mode" ]; then chmod -- "$mode" "$name" || fail MODE "$mode"; fi
    printf 'K\n'
}

# What is in the private folder removed from inside it (wherever its name went), then the name.
drop() {
    case $tmp in ."$name".cmdb-*)
        (enter && rm -rf --one-file-system -- old new payload)
        rm -rf --one-file-system -- "$tmp" ;;
    esac
}

walk
case $phase in
look) look ;;
keep) keep ;;
place)
    # Whatever fails from here removes the private folder, old tree included if moved there.
    (place) || {
        rc=$?
        (enter && { [ -e "../$name" ] || [ -L "../$name" ] || [ ! -e old ] ||
            mv -T -- old "../$name"; })
        drop
        exit $rc
    }
    drop || :  # in place: what is left of the old one is no failure of the push
    ;;
drop) drop ;;
esac
"""
