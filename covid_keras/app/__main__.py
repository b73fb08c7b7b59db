"""Start paper 004's user interface over exported models: a gradio page on 127.0.0.1.

    python -m covid_keras.app --model saved_models/xray_cnn
    python -m covid_keras.app --model saved_models/xray_cnn --model saved_models/multiscale_resnet50/1 --port 7861

Each --model is an export (saved_models/<name>/<version>, or the model
folder for its latest version): X-ray models (xray_cnn, DenseNet /
InceptionV3, DETL CNN) appear in the X-ray tab, CT models (the multi-scale
slice classifier, the patient pipeline, the 3-D volume model) in the CT
study tab, a selector in each when several are given. The page shows the
probabilities, the Grad-CAM map, and for a CT study the per-slice curve and
the three most suspicious slices; bad input is one sentence in the page.

Nothing of a patient is kept: the app works in one private temporary
folder (gradio's cache inside it), deletes each upload after its answer,
lets gradio's sweep delete the answer's PNGs after --keep-outputs seconds,
and removes the folder when it stops (Ctrl-C). Flagging is off; nothing is
sent anywhere (analytics off). Research software, not a medical device.
"""

import argparse
import ipaddress
import logging
import signal
import sys

from covid_keras import cli, errors

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

DEFAULT_PORT = 7860
DEFAULT_KEEP_OUTPUTS = 300
DEFAULT_MAX_UPLOAD_MB = 2048


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.app", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="EXPORT",
                        help="an exported model: saved_models/<name>/<version> or saved_models/<name> (its "
                             "latest version); repeat for several")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve the page on")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; the default serves this machine only. Anything else "
                             "exposes patient images to the network: put it behind your hospital's "
                             "authentication")
    parser.add_argument("--keep-outputs", type=int, default=DEFAULT_KEEP_OUTPUTS, metavar="SECONDS",
                        help="seconds an answer's pictures stay on disk for the browser to fetch, and the "
                             "longest an upload waits for its button before it is deleted")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help="largest upload accepted (a 1,000-slice 512x512 CT study zips to about 0.5 GB)")
    parser.add_argument("--allow-folders", choices=("auto", "yes", "no"), default="auto",
                        help="offer a field to type a study's folder on this machine (auto: only when "
                             "--host is a loopback address)")
    parser.add_argument("--workspace", default=None, metavar="DIR",
                        help="the temporary folder the app works in (default: a new private folder in the "
                             "system's temporary folder); it is emptied and removed when the app stops")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535. Received: {args.port}")
    if args.keep_outputs < 1:
        parser.error(f"--keep-outputs must be at least 1 second. Received: {args.keep_outputs}")
    if args.max_upload_mb < 1:
        parser.error(f"--max-upload-mb must be at least 1. Received: {args.max_upload_mb}")
    if args.allow_folders == "yes" and not _is_loopback(args.host):
        parser.error(f"--allow-folders yes with --host {args.host} would let anyone who reaches the page read "
                     "this machine's folders; serve on a loopback address or leave it at auto.")
    return args


def main(argv=None):
    args = parse_args(argv)
    from covid_keras.app import uploads
    from covid_keras.app.page import build_app
    from covid_keras.serving import load_model

    served = [load_model(path) for path in args.model]  # bad exports fail here, in one sentence
    allow_folders = args.allow_folders == "yes" or (args.allow_folders == "auto" and _is_loopback(args.host))
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s")
    workspace = uploads.Workspace(args.workspace)
    demo = None
    # SIGTERM / SIGHUP (a service manager, a closed terminal) stop the app as Ctrl-C does, so the workspace goes.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        for model in served:
            model.signature  # noqa: B018 - load every SavedModel before the page opens
        demo = build_app(served, workspace, allow_folders=allow_folders, keep_outputs=args.keep_outputs)
        print(f"covid_keras app: http://{args.host}:{args.port} ({len(served)} model(s); Ctrl-C stops it)",
              flush=True)
        try:
            demo.launch(server_name=args.host, server_port=args.port, quiet=True, show_error=False,
                        footer_links=["api"], run_history=False, max_file_size=f"{args.max_upload_mb}mb")
        except OSError as e:
            raise errors.ConfigurationError(
                f"the app cannot listen on {args.host}:{args.port} ({type(e).__name__}); the port may be in use, "
                "choose another with --port."
            ) from None
    finally:
        if demo is not None:
            demo.close()  # stop answering before the workspace goes
        workspace.close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
