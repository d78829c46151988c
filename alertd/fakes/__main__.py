import argparse

from alertd import fakes

parser = argparse.ArgumentParser(prog="alertd fakes", description="Serve the fake providers.")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8900)
args = parser.parse_args()
fakes.serve(args.host, args.port)
